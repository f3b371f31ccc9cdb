// gptj bench: prints one JSON object per measurement on stdout (docs/DESIGN.md §5). Runs the model steps
// directly (no scheduler): a prefill of one long prompt, then decode steps at each batch size.
// Timings are medians over repeated steps; nothing here is used by tests.
#include <sys/resource.h>

#include <omp.h>

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <iostream>
#include <numeric>
#include <utility>

#include "kernels/cpu/cpu_isa.h"
#include "launcher/commands.h"
#include "runtime/core/error.h"
#include "runtime/generate/draw_chooser.h"
#include "runtime/generate/tokenizer.h"

namespace gptj {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Read bandwidth of this host's memory with all threads (GB/s), best of 3 passes over `bytes`
// (allocated, touched and freed here). An integer XOR reduction: the compiler may vectorize and
// reorder it freely (a float sum it may not), so the loop is bound by memory, not by an add
// dependency chain.
constexpr std::size_t kProbeBytes = std::size_t{1} << 30;        // before loading
constexpr std::size_t kAroundProbeBytes = std::size_t{256} << 20;  // around the batch-1 figure (> any L3)
double measure_read_bandwidth(std::size_t bytes = kProbeBytes) {
  const std::size_t n = bytes / sizeof(uint64_t) / 2 * 2;
  std::vector<uint64_t> data(n, 1);
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto start = Clock::now();
    uint64_t fold = 0;
#pragma omp parallel for reduction(^ : fold) schedule(static)
    for (std::size_t i = 0; i < n; ++i) fold ^= data[i];
    const double s = seconds_since(start);
    if (fold == 0) best = std::max(best, n * sizeof(uint64_t) / s / 1e9);  // n is even: fold is 0
  }
  return best;
}

// JSON text of `v` with every double as a plain decimal, shortest round-trip (118794.71623376201,
// 0.000012), never Boost.JSON's exponent form (1.1879471623376201E5); a non-finite one is null.
void write_plain(const boost::json::value& v, std::string& out) {
  if (v.is_double()) {
    const double x = v.get_double();
    if (!std::isfinite(x)) {
      out += "null";
      return;
    }
    char buffer[400];  // fixed notation of a double: at most ~330 characters
    const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, x, std::chars_format::fixed);
    out.append(buffer, ec == std::errc() ? end : buffer);
  } else if (v.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [key, value] : v.get_object()) {
      if (!std::exchange(first, false)) out += ',';
      out += boost::json::serialize(boost::json::string(key));
      out += ':';
      write_plain(value, out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& item : v.get_array()) {
      if (!std::exchange(first, false)) out += ',';
      write_plain(item, out);
    }
    out += ']';
  } else {
    out += boost::json::serialize(v);
  }
}

void print(boost::json::object obj) {
  std::string line;
  write_plain(obj, line);
  std::cout << line << std::endl;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

}  // namespace

CommandRunner register_bench(CLI::App& app) {
  struct Args {
    ModelOptions model;
    std::string decode_batches = "1,8,32";
    int prefill_tokens = 128;
    int prefill_repeats = 3;
    int context = 32;
    int steps = 16;
    bool random_weights = false;
    bool bandwidth = true;
    bool sampling = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode speed (JSON lines on stdout)");
  cmd->add_option("--model", args->model.model_dir, "checkpoint directory");
  cmd->add_flag("--random-weights", args->random_weights, "random weights of the --config shape");
  cmd->add_option("--config", args->model.random_config, "config.json for --random-weights");
  cmd->add_option("--seed", args->model.random_seed, "random weight seed");
  cmd->add_option("--backend", args->model.backend, "cpu|cuda|auto")->capture_default_str();
  cmd->add_option("--dtype", args->model.dtype, "compute dtype")->capture_default_str();
  cmd->add_option("--weights", args->model.weights, "weight format: auto | int8 | int4 | fp8 (quantized at load)")
      ->capture_default_str();
  cmd->add_flag("--quantize-lm-head", args->model.quantize_lm_head, "with --weights int8/int4: lm_head too");
  cmd->add_flag("--int8-activations", args->model.int8_activations, "with --weights int8 (cpu): int8 x int8 products");
  cmd->add_option("--kv-blocks", args->model.kv_blocks, "KV blocks per rank");
  cmd->add_option("--decode-batches", args->decode_batches, "comma-separated batch sizes")->capture_default_str();
  cmd->add_option("--prefill-tokens", args->prefill_tokens, "prompt length of the prefill run")->capture_default_str();
  cmd->add_option("--prefill-repeats", args->prefill_repeats, "prefill runs (the median is printed; more for profiling)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--context", args->context, "prompt length before the decode steps")->capture_default_str();
  cmd->add_option("--steps", args->steps, "timed decode steps per batch size")->capture_default_str();
  cmd->add_flag("!--no-bandwidth", args->bandwidth, "skip the host memory bandwidth measurement");
  cmd->add_flag("--sampling", args->sampling,
                "also time decode steps that sample (T = 1, top-p 0.9, top-k 1000, penalties) against greedy");
  return [args](World& world) {
    GPTJ_CHECK(args->random_weights == !args->model.random_config.empty(),
               "--random-weights and --config go together");
    GPTJ_CHECK(args->random_weights || !args->model.model_dir.empty(), "bench needs --model or --random-weights --config");
    const std::vector<int32_t> batches = parse_id_list(args->decode_batches, "--decode-batches");
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int block_size = args->model.block_size;
    constexpr int kSamplingSettings = 4;
    const int decode_len = args->context + args->steps * (args->sampling ? 1 + kSamplingSettings : 1) + 2;
    // KV blocks: the prefill sequence gets its own region, each decode sequence a small one.
    const int prefill_blocks = (args->prefill_tokens + block_size - 1) / block_size;
    const int decode_blocks = (decode_len + block_size - 1) / block_size;
    if (args->model.kv_blocks == 0) args->model.kv_blocks = prefill_blocks + decode_blocks * std::max(1, max_batch);
    const double bandwidth = args->bandwidth && world.rank() == 0 ? measure_read_bandwidth() : 0;
    ModelSession session(world, args->model, "bench");
    const GptjConfig& c = session.config();
    const int code = session.run([&]() {
      ModelRunner& runner = session.runner();
      Communicator& comm = world.communicator();
      boost::json::object common{{"backend", session.backend().name()},
                                 {"dtype", session.options().dtype},
                                 {"weights", session.backend().weight_format()},
                                 {"weight_bytes_per_rank", session.backend().weight_bytes()},
                                 {"tp", world.size()},
                                 {"n_layer", c.n_layer},
                                 {"n_embd", c.n_embd},
                                 {"threads_per_rank", omp_get_max_threads()},
                                 {"cpu_isa", std::string(cpu::cpu_isa_name())}};
      auto with = [&](boost::json::object obj) {
        for (const auto& [k, v] : common) obj[k] = v;
        return obj;
      };
      // Deterministic prompt ids below the vocabulary.
      auto prompt = [&](int len, int salt) {
        std::vector<int32_t> ids(static_cast<std::size_t>(len));
        for (int i = 0; i < len; ++i) ids[i] = static_cast<int32_t>((i * 7919 + salt * 104729) % std::min(c.vocab_size, 50000));
        return ids;
      };
      auto prefill_table = [&]() {
        std::vector<int32_t> table(static_cast<std::size_t>(prefill_blocks));
        std::iota(table.begin(), table.end(), 0);
        return table;
      };
      auto blocks_of = [&](int seq) {  // decode sequence `seq`
        std::vector<int32_t> table(static_cast<std::size_t>(decode_blocks));
        std::iota(table.begin(), table.end(), prefill_blocks + seq * decode_blocks);
        return table;
      };
      // Every timed step samples greedily as generation does (draws planned by the Sampler): each
      // rank reduces its vocab shard to a DrawSummary per sequence (runtime/backend/draw.h); full
      // logits never cross.
      Sampler greedy(SamplingParams{}, c.vocab_size);
      auto step_greedy = [&](StepBatch& batch) {
        batch.draws.clear();
        for (int i = 0; i < batch.logit_rows(); ++i) batch.draws.push_back(greedy.plan({}, 0, i));
        runner.step_draws(batch, [](int, const DrawSummary*, int) { return false; });
      };
      const double weight_gb = session.backend().weight_bytes() / 1e9;
      if (bandwidth > 0)
        print({{"what", "memory_bandwidth"}, {"GB_per_s", bandwidth}, {"threads", omp_get_max_threads()}});

      // Prefill: one sequence of prefill_tokens, median of prefill_repeats.
      {
        std::vector<double> times;
        for (int rep = 0; rep < args->prefill_repeats; ++rep) {
          StepBatch batch;
          batch.seqs.push_back({prompt(args->prefill_tokens, rep), 0, prefill_table(), false});
          const auto start = Clock::now();
          step_greedy(batch);
          times.push_back(seconds_since(start));
        }
        const double t = median(times);
        print(with({{"what", "prefill"}, {"batch", 1}, {"tokens", args->prefill_tokens},
                    {"ms", t * 1e3}, {"tokens_per_s", args->prefill_tokens / t}}));
      }
      // Sampling settings against greedy, on the same sequences (positions after the greedy steps):
      // ms per step, the sampling's cost per draw over greedy, and the rows fetched and search rounds
      // per step (the threshold search settles wide top-k/top-p without moving rows).
      auto time_sampling = [&](int batch_size, double greedy_ms) {
        struct Setting {
          const char* name;
          SamplingParams params;
        };
        std::vector<Setting> settings(kSamplingSettings);
        settings[0] = {"temperature 1", {}};
        settings[1] = {"temperature 1, top_p 0.9", {}};
        settings[1].params.top_p = 0.9f;
        settings[2] = {"temperature 1, top_k 1000", {}};
        settings[2].params.top_k = 1000;
        settings[3] = {"temperature 1, top_p 0.9, repetition_penalty 1.2, no_repeat_ngram_size 2", {}};
        settings[3].params.top_p = 0.9f;
        settings[3].params.repetition_penalty = 1.2f;
        settings[3].params.no_repeat_ngram_size = 2;
        const std::vector<int32_t> history = prompt(24, 7);  // what the penalties see
        for (int i = 0; i < kSamplingSettings; ++i) {
          std::vector<Sampler> samplers;
          for (int s = 0; s < batch_size; ++s) {
            SamplingParams p = settings[i].params;
            p.temperature = 1.0f;
            p.seed = static_cast<uint64_t>(s);
            samplers.emplace_back(p, c.vocab_size);
          }
          const uint64_t rows0 = runner.rows_fetched(), rounds0 = runner.search_rounds(), searched0 = runner.searched_draws();
          std::vector<double> times;
          for (int step = 0; step < args->steps; ++step) {
            const int pos = args->context + args->steps * (1 + i) + step;
            StepBatch decode;
            std::vector<DrawChooser::Draw> draws(static_cast<std::size_t>(batch_size));
            for (int s = 0; s < batch_size; ++s) {
              decode.seqs.push_back({{static_cast<int32_t>((s + step) % 1000)}, pos, blocks_of(s), false});
              decode.draws.push_back(samplers[s].plan(history, 0, s));
              draws[s].sampler = &samplers[s];
            }
            const auto start = Clock::now();
            DrawChooser chooser(decode, runner.vocab_size(), draws);
            chooser.choose_from_rows(runner.step_draws(decode, chooser));
            times.push_back(seconds_since(start));
          }
          const double ms = median(times) * 1e3;
          print(with({{"what", "sampling"}, {"setting", settings[i].name}, {"batch", batch_size},
                      {"ms_per_step", ms}, {"greedy_ms_per_step", greedy_ms},
                      {"us_per_draw_over_greedy", (ms - greedy_ms) * 1e3 / batch_size},
                      {"rows_fetched_per_step", static_cast<double>(runner.rows_fetched() - rows0) / args->steps},
                      {"search_rounds_per_step", static_cast<double>(runner.search_rounds() - rounds0) / args->steps},
                      {"searched_draws_per_step", static_cast<double>(runner.searched_draws() - searched0) / args->steps}}));
        }
      };
      // Decode: prefill `batch` sequences of `context` tokens (untimed), then time single steps.
      for (int batch_size : batches) {
        StepBatch prefill;
        for (int s = 0; s < batch_size; ++s) prefill.seqs.push_back({prompt(args->context, s), 0, blocks_of(s), false});
        // (Probed before the untimed prefill, which then brings the weights back into the caches.)
        const double bandwidth_before_b1 =
            batch_size == 1 && bandwidth > 0 && session.backend().name() == "cpu" ? measure_read_bandwidth(kAroundProbeBytes) : 0;
        step_greedy(prefill);
        std::vector<double> times;
        const uint64_t calls_before = session.backend().all_reduce_calls();
        const double reduce_before = comm.all_reduce_seconds();
        double total = 0;
        for (int step = 0; step < args->steps; ++step) {
          StepBatch decode;
          for (int s = 0; s < batch_size; ++s)
            decode.seqs.push_back({{static_cast<int32_t>((s + step) % 1000)}, args->context + step, blocks_of(s), false});
          const auto start = Clock::now();
          step_greedy(decode);
          times.push_back(seconds_since(start));
          total += times.back();
        }
        const double ms = median(times) * 1e3;
        boost::json::object obj = with({{"what", "decode"}, {"batch", batch_size}, {"context", args->context},
                                        {"ms_per_step", ms}, {"tokens_per_s", batch_size * 1e3 / ms},
                                        {"all_reduces_per_layer", static_cast<double>(session.backend().all_reduce_calls() - calls_before) /
                                                                      (args->steps * c.n_layer)},
                                        {"all_reduce_share", (comm.all_reduce_seconds() - reduce_before) / total}});
        if (batch_size == 1 && bandwidth > 0 && session.backend().name() == "cpu") {
          // A batch-1 step reads every weight matrix of this rank once (not wte): the floor, from the
          // bandwidth probed right before and right after these steps (their mean), since a VM's
          // bandwidth moves within seconds. Rank 0 probes; the other ranks wait for the next step.
          const double around = (bandwidth_before_b1 + measure_read_bandwidth(kAroundProbeBytes)) / 2;
          const double floor_ms = weight_gb / around * 1e3;
          obj["bandwidth_GB_per_s_around"] = around;
          obj["weight_read_floor_ms"] = floor_ms;
          obj["ratio_to_floor"] = ms / floor_ms;
        }
        print(obj);
        if (args->sampling) time_sampling(batch_size, ms);
      }
      if (!args->model.model_dir.empty() && Tokenizer::available(args->model.model_dir)) {
        // Tokenizer throughput on ~1 MB of text made of decoded vocabulary pieces.
        const Tokenizer tokenizer = Tokenizer::from_model_dir(args->model.model_dir);
        std::string text;
        for (int i = 0; text.size() < (1u << 20); ++i) text += tokenizer.decode({(i * 7919) % 50000});
        const auto start = Clock::now();
        const std::size_t n = tokenizer.encode(text).size();
        const double s = seconds_since(start);
        print({{"what", "tokenizer_encode"}, {"MB", text.size() / 1e6}, {"tokens", n}, {"MB_per_s", text.size() / 1e6 / s}});
      }
      return 0;
    });
    // Peak memory of every rank, reported by rank 0.
    float rss = static_cast<float>(peak_rss_mb());
    std::vector<float> all(static_cast<std::size_t>(world.size()));
    world.communicator().gather_to_root(&rss, 1, all.data());
    if (world.rank() == 0) {
      boost::json::array per_rank;
      for (float mb : all) per_rank.push_back(mb);
      // Rank 0's peak includes the bandwidth probe's buffer when that was larger than the rest.
      print({{"what", "peak_memory"}, {"tp", world.size()}, {"peak_rss_mb_per_rank", per_rank},
             {"rank0_bandwidth_probe_mb", args->bandwidth ? static_cast<double>(kProbeBytes >> 20) : 0.0}});
    }
    return code;
  };
}

}  // namespace gptj
