#!/usr/bin/env bash
# The official `openai` npm package (v4), unmodified, makes a plain and a streaming completion, and a
# plain and a streaming chat completion.
# Skips (exit 0, printing SKIP and why) only when npm or the npm registry is unavailable.
source "$(dirname "$0")/common.sh" "$@"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "SKIP: npm/node not installed"; exit 0
fi
if ! timeout 30 npm ping >/dev/null 2>&1; then
  echo "SKIP: the npm registry is unreachable (npm ping failed)"; exit 0
fi
mkdir -p "$WORK/client"
(cd "$WORK/client" && timeout 300 npm install --no-audit --no-fund --silent openai@4 >"$WORK/npm.log" 2>&1) ||
  { cat "$WORK/npm.log" >&2; fail "npm install openai@4 failed although the registry answers"; }
# The issue's case: an unmodified client against a tensor-parallel server (2 ranks).
start_server mpirun --allow-run-as-root --oversubscribe -np 2 "$GPTJ" serve --model "$MODEL" --backend cpu --port 0
cat >"$WORK/client/check.mjs" <<'JS'
import OpenAI from "openai";
const port = process.argv[2];
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "x", timeout: 60000, maxRetries: 0 });
const fail = (m) => { console.error("FAIL: " + m); process.exit(1); };
const models = await client.models.list();
const model = models.data[0].id;
const plain = await client.completions.create({ model, prompt: "Hello, my name is", max_tokens: 8, temperature: 0 });
if (plain.object !== "text_completion" || plain.choices.length !== 1) fail("plain: " + JSON.stringify(plain));
if (plain.choices[0].finish_reason !== "length" || plain.usage.completion_tokens !== 8) fail("plain: " + JSON.stringify(plain));
const stream = await client.completions.create({ model, prompt: "Hello, my name is", max_tokens: 8, temperature: 0, stream: true });
let text = "", chunks = 0, finish = null;
for await (const chunk of stream) {
  chunks++;
  text += chunk.choices[0].text;
  finish = chunk.choices[0].finish_reason ?? finish;
}
if (text !== plain.choices[0].text) fail(`streamed text ${JSON.stringify(text)} != ${JSON.stringify(plain.choices[0].text)}`);
if (chunks < 2 || finish !== "length") fail(`stream: ${chunks} chunks, finish ${finish}`);
const messages = [{ role: "user", content: "Hello, who are you?" }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
if (chat.object !== "chat.completion" || chat.choices[0].message.role !== "assistant") fail("chat: " + JSON.stringify(chat));
const chatStream = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, stream: true });
let reply = "";
for await (const chunk of chatStream) reply += chunk.choices[0]?.delta?.content ?? "";
if (reply !== chat.choices[0].message.content) fail(`streamed chat ${JSON.stringify(reply)} != ${JSON.stringify(chat.choices[0].message.content)}`);
console.log(`openai client: plain and streamed completions agree (${chunks} chunks); chat plain and streamed agree`);
JS
(cd "$WORK/client" && timeout 120 node check.mjs "$PORT") || fail "the openai client check failed"
echo PASS
