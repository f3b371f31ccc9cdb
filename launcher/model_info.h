// What the OpenAI request front-end (runtime/serve/request_frontend.h) knows of the loaded model,
// built the same way for `gptj serve` and for OpenAI batch lines in `gptj batch` (rank 0).
#pragma once
#include <string>

#include "launcher/session.h"
#include "runtime/generate/scheduler.h"
#include "runtime/serve/request_frontend.h"

namespace gptj {

// The ModelInfo of `session` run with scheduler `options`: name = `served_name`, else the model
// directory's name; limits from the options and config; `tokenizer` (may be null) is borrowed and
// must outlive the result; created = now; fingerprint "fp_{backend}_{dtype}_tp{ranks per replica}".
ModelInfo model_info_for(ModelSession& session, const SchedulerOptions& options, const Tokenizer* tokenizer,
                         const std::string& served_name);

}  // namespace gptj
