#!/usr/bin/env bash
# gptj batch on hostile input and output files (issue 17):
#  1. --resume with corrupt lines in the middle of the output keeps every valid line, moves the
#     corrupt ones to OUT.corrupt, cuts only a torn last line, and redoes just the lost ids (np 2);
#  2. ids round-trip as written (1e400, 2^64, 2^64+1, 1 vs 1.0, nested values) and stay strict JSON;
#  3. a repeated id gets an error line naming its first line, also across --resume;
#  4. --input that is a directory or cannot be read: one-line error, non-zero exit, output untouched;
#  5. the input is streamed: results appear while a FIFO input is still open, and a 30 MB line gets
#     an error line (--max-line-bytes) without being held in memory (peak RSS bounded).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
model=$DATA/tiny-gptj-a/model

# --- 1. corrupt middle lines + torn last line, resumed under mpirun -np 2 ---------------------
python3 - "$DATA" > "$WORK/in100.jsonl" <<'PY'
import json, sys
prompts = json.load(open(sys.argv[1] + "/gptj_prompts.json"))["models"]["tiny-gptj-a"]["prompts"]
for i in range(100):
    print(json.dumps({"id": i, "tokens": prompts[i % 4], "max_new_tokens": 2}))
PY
out=$WORK/out100.jsonl
mpi 2 batch --model "$model" --input "$WORK/in100.jsonl" --output "$out" 2> "$WORK/first.err" \
  || { cat "$WORK/first.err"; fail "first run of 100 lines failed"; }
cp "$out" "$WORK/complete.jsonl"
python3 - "$out" <<'PY' || fail "could not corrupt the output"
import sys
lines = open(sys.argv[1], "rb").read().split(b"\n")[:-1]
assert len(lines) == 100
lines[9] = b'{"id":9,"text":"garb'           # line 10: cut short, its id still readable
lines[49] = b'\x00\x01 binary junk \xff'      # line 50: no id at all
open(sys.argv[1], "wb").write(b"\n".join(lines[:99]) + b"\n" + lines[99][:15])  # line 100: torn
PY
mpi 2 batch --model "$model" --input "$WORK/in100.jsonl" --output "$out" --resume 2> "$WORK/resume.err" \
  || { cat "$WORK/resume.err"; fail "resume over a corrupt output failed"; }
grep -q "line 10 is corrupt.*id 9" "$WORK/resume.err" || { cat "$WORK/resume.err"; fail "line 10 not reported"; }
grep -q "line 50 is corrupt.*no id" "$WORK/resume.err" || { cat "$WORK/resume.err"; fail "line 50 not reported"; }
grep -q "3 lines written (0 errors), 97 skipped" "$WORK/resume.err" \
  || { cat "$WORK/resume.err"; fail "resume did not redo exactly the 3 lost lines"; }
python3 - "$WORK/complete.jsonl" "$out" "$out.corrupt" <<'PY' || fail "corrupt-line resume"
import json, sys
complete = open(sys.argv[1], "rb").read().split(b"\n")[:-1]
now = open(sys.argv[2], "rb").read().split(b"\n")
assert now[-1] == b"", "output does not end with a newline"
now = now[:-1]
kept = [l for i, l in enumerate(complete) if i not in (9, 49, 99)]
assert now[:97] == kept, "the 97 valid lines were not kept as they were, in order"
assert sorted(json.loads(l)["id"] for l in now[97:]) == [9, 49, 99], [l[:40] for l in now[97:]]
assert sorted(now) == sorted(complete), "redone lines differ from the first run (greedy)"
moved = open(sys.argv[3], "rb").read()
assert moved == b'{"id":9,"text":"garb\n\x00\x01 binary junk \xff\n', moved
print("ok: corrupt lines moved aside, 97 kept, 3 redone")
PY

# --- 2 + 3. ids as written; duplicates ------------------------------------------------------
cat > "$WORK/ids.jsonl" <<'EOF'
{"id": 1e400, "tokens": [1, 2], "max_new_tokens": 1}
{"id": 18446744073709551616, "tokens": [1, 2], "max_new_tokens": 1}
{"id": 18446744073709551617, "tokens": [1, 2], "max_new_tokens": 1}
{"id": 1, "tokens": [1, 2], "max_new_tokens": 1}
{"id": 1.0, "tokens": [1, 2], "max_new_tokens": 1}
{"id": -0.000000000000000000012345678901234567890, "tokens": [1, 2], "max_new_tokens": 1}

{"id": "a", "tokens": [1, 2], "max_new_tokens": 1}
{"id": "\u0061", "tokens": [1, 2], "max_new_tokens": 1}
{"id": [1, {"k" : 2.50}], "tokens": [1, 2], "max_new_tokens": 1}
{"id": 1, "tokens": [3], "max_new_tokens": 1}
{"id": 18446744073709551617, "tokens": "bad"}
{"id": 2, "tokens": "bad"}
{"id": 2, "tokens": [3], "max_new_tokens": 1}
EOF
verify_ids() {  # verify_ids OUT: results and errors as expected, ids exactly as written
  python3 - "$1" <<'PY' || fail "ids in $1"
import json, sys
def strict(text):  # numbers kept as their text; Infinity/NaN refused
    def bad(name): raise ValueError("not JSON: " + name)
    return json.loads(text, parse_int=lambda s: "I" + s, parse_float=lambda s: "F" + s, parse_constant=bad)
lines = [strict(l) for l in open(sys.argv[1])]
results = sorted(json.dumps(d["id"]) for d in lines if "error" not in d)
want = sorted(json.dumps(i) for i in ["F1e400", "I18446744073709551616", "I18446744073709551617", "I1", "F1.0",
                                      "F-0.000000000000000000012345678901234567890", "a", ["I1", {"k": "F2.50"}]])
assert results == want, results
errors = {int(d["line"][1:]): (d["id"], d["error"]) for d in lines if "error" in d}
assert errors == {
    9: ("a", "line 9: duplicate id: first seen on line 8"),
    11: ("I1", "line 11: duplicate id: first seen on line 4"),
    12: ("I18446744073709551617", "line 12: duplicate id: first seen on line 3"),
    13: ("I2", "line 13: field 'tokens' must be an array of token ids"),
    14: ("I2", "line 14: duplicate id: first seen on line 13"),
}, errors
assert len(lines) == len(results) + len(errors)
print(f"ok {sys.argv[1]}: {len(results)} results, {len(errors)} errors, ids as written")
PY
}
out=$WORK/ids_out.jsonl
"$GPTJ" batch --model "$model" --input "$WORK/ids.jsonl" --output "$out" 2> "$WORK/ids.err" \
  || { cat "$WORK/ids.err"; fail "ids run failed"; }
verify_ids "$out"
cp "$out" "$WORK/ids_complete.jsonl"
"$GPTJ" batch --model "$model" --input "$WORK/ids.jsonl" --output "$out" --resume 2> "$WORK/ids_resume.err" \
  || fail "ids resume failed"
grep -q "0 lines written (0 errors), 13 skipped" "$WORK/ids_resume.err" || { cat "$WORK/ids_resume.err"; fail "ids resume redid lines"; }
cmp -s "$out" "$WORK/ids_complete.jsonl" || fail "a resume of a finished job changed the output"
# A job that had finished only ids 1 and 1e400: the duplicates of 1 are still errors, once each.
grep -E '^\{"id":(1|1e400),"text"' "$WORK/ids_complete.jsonl" > "$out"
[ "$(wc -l < "$out")" -eq 2 ] || fail "setup: expected 2 finished lines"
"$GPTJ" batch --model "$model" --input "$WORK/ids.jsonl" --output "$out" --resume 2> "$WORK/ids_resume2.err" \
  || fail "partial ids resume failed"
grep -q "11 lines written (5 errors), 2 skipped" "$WORK/ids_resume2.err" || { cat "$WORK/ids_resume2.err"; fail "partial resume"; }
verify_ids "$out"

# --- 4. --input that is a directory or cannot be read ----------------------------------------
mkdir -p "$WORK/adir"
echo '{"id":"kept","text":"x","finish_reason":"length"}' > "$WORK/kept.jsonl"
cp "$WORK/kept.jsonl" "$WORK/kept_before.jsonl"
bad_inputs=("$WORK/adir" /proc/self/mem "$WORK/missing.jsonl")
if [ "$(id -u)" != 0 ]; then  # root reads a mode-000 file anyway; /proc/self/mem fails to read for everyone
  echo '{"id":1,"tokens":[1]}' > "$WORK/noread.jsonl"
  chmod 000 "$WORK/noread.jsonl"
  bad_inputs+=("$WORK/noread.jsonl")
fi
for bad in "${bad_inputs[@]}"; do
  "$GPTJ" batch --model "$model" --input "$bad" --output "$WORK/kept.jsonl" 2> "$WORK/bad.err"
  code=$?
  [ $code -ne 0 ] || fail "--input $bad: exit 0"
  [ "$(wc -l < "$WORK/bad.err")" -eq 1 ] && grep -q -- "--input $bad" "$WORK/bad.err" \
    || { cat "$WORK/bad.err"; fail "--input $bad: want one line naming it"; }
  cmp -s "$WORK/kept.jsonl" "$WORK/kept_before.jsonl" || fail "--input $bad: the output was touched"
  echo "ok --input $bad: $(cat "$WORK/bad.err")"
done

# --- 5a. streaming: results come while the input (a FIFO) is still open ----------------------
mkfifo "$WORK/fifo"
out=$WORK/fifo_out.jsonl
"$GPTJ" batch --model "$model" --input "$WORK/fifo" --output "$out" 2> "$WORK/fifo.err" &
pid=$!
exec 3> "$WORK/fifo"
printf '{"id":1,"tokens":[1,2],"max_new_tokens":2}\n{"id":2,"tokens":[3],"max_new_tokens":2}\n' >&3
for _ in $(seq 600); do
  [ -f "$out" ] && [ "$(wc -l < "$out")" -ge 2 ] && break
  sleep 0.05
done
lines=$( [ -f "$out" ] && wc -l < "$out" || echo 0)
printf '{"id":3,"tokens":[4],"max_new_tokens":2}\n' >&3
exec 3>&-
wait $pid || { cat "$WORK/fifo.err"; fail "FIFO run failed"; }
[ "$lines" -ge 2 ] || fail "no result while the input was still open (the input is not streamed)"
[ "$(grep -c '"finish_reason"' "$out")" -eq 3 ] || fail "FIFO run: want 3 results"
echo "ok: results written while the FIFO input was open"

# --- 5b. a 30 MB line: an error line, memory bounded ------------------------------------------
python3 - > "$WORK/big.jsonl" <<'PY'
print('{"id": 1, "tokens": [1, 2, 3], "max_new_tokens": 2}')
print('{"id": "big", "tokens": [' + ",".join(["1"] * 15_000_000) + "]}")
print('{"id": 3, "tokens": [4, 5], "max_new_tokens": 2}')
print('{"id": 4, "tokens": [6, 7], "max_new_tokens": 2, "prompt": null}')
PY
out=$WORK/big_out.jsonl
if [ -x /usr/bin/time ]; then
  /usr/bin/time -v "$GPTJ" batch --model "$model" --input "$WORK/big.jsonl" --output "$out" 2> "$WORK/big.err" \
    || { cat "$WORK/big.err"; fail "30 MB line run failed"; }
  rss_kb=$(awk -F: '/Maximum resident set size/ {print $2 + 0}' "$WORK/big.err")
  echo "peak RSS with a 30 MB line: $rss_kb kB"
  [ "$rss_kb" -lt 350000 ] || fail "peak RSS $rss_kb kB: the 30 MB line was held in memory"
else
  "$GPTJ" batch --model "$model" --input "$WORK/big.jsonl" --output "$out" 2> "$WORK/big.err" || fail "30 MB line run failed"
  echo "no /usr/bin/time: peak RSS not checked"
fi
python3 - "$out" <<'PY' || fail "30 MB line output"
import json, sys
lines = {json.dumps(d["id"]): d for d in map(json.loads, open(sys.argv[1]))}
assert lines['"big"']["error"] == "line 2: longer than --max-line-bytes 1048576 (30000026 bytes)", lines['"big"']
assert lines['"big"']["line"] == 2
assert "tokens" in lines["1"] and "tokens" in lines["3"], lines
assert "exactly one of 'prompt' and 'tokens'" in lines["4"]["error"], lines["4"]   # the line after the long one was read whole
print("ok: the 30 MB line got an error line, its neighbours ran")
PY
# The limit is an option: under --max-line-bytes 45 the 56-byte line is an error, the 40-byte one runs.
printf '{"id":1,"tokens":[1],"max_new_tokens":1}\n{"id":2,"tokens":[1,2,3,4,5,6,7,8,9],"max_new_tokens":1}\n' > "$WORK/short.jsonl"
"$GPTJ" batch --model "$model" --input "$WORK/short.jsonl" --output "$WORK/short_out.jsonl" --max-line-bytes 45 \
  2> "$WORK/short.err" || { cat "$WORK/short.err"; fail "--max-line-bytes run failed"; }
grep -q '^{"id":1,"text"' "$WORK/short_out.jsonl" || fail "--max-line-bytes 45: the 40-byte line did not run"
grep -q '^{"id":2,"error":"line 2: longer than --max-line-bytes 45 (56 bytes)","line":2}$' "$WORK/short_out.jsonl" \
  || { cat "$WORK/short_out.jsonl"; fail "--max-line-bytes 45: no error line for the 56-byte line"; }
echo PASS
