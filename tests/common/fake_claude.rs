//! Fake `claude` executables (bash scripts) that mimic the headless Claude Code CLI: argv rules and
//! quirks, the `json` and `stream-json` output (with `structured_output` under `--json-schema`),
//! the prompt on stdin, exit codes and the root refusal
//! (docs/claude-code-cli.md §2, §4, §5), with scripted behaviours for RALPH-loop tests.
//!
//! Every invocation logs its argv as one JSON array per line to `<dir>/fake_claude_argv.jsonl`
//! (path baked into the script, so it survives `env_clear()`), to `./.fake_claude_argv.jsonl` in its
//! cwd, and to `$FAKE_CLAUDE_LOG` if set; its `env` output goes to `<dir>/fake_claude_env.log` and to
//! `$FAKE_CLAUDE_ENV_LOG` if set, each block followed by the line [`ENV_LOG_SEPARATOR`].

// Each test uses a different subset of these helpers, and the harness module is private to the test
// binary, so `pub` items would otherwise warn as dead or unreachable.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The argv log the script writes next to itself.
pub const ARGV_LOG: &str = "fake_claude_argv.jsonl";
/// The argv log the script writes into its working directory (git-excluded when cwd is a repo root).
pub const CWD_ARGV_LOG: &str = ".fake_claude_argv.jsonl";
/// The env log the script writes next to itself.
pub const ENV_LOG: &str = "fake_claude_env.log";
/// The line that ends each invocation's block in the env logs.
pub const ENV_LOG_SEPARATOR: &str = "----- end of fake claude env -----";

/// What a fake `claude` does once its argv has been accepted.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Print a success result whose `result` is this text.
    Reply(String),
    /// Tick the first `- [ ] ` box in `TASKS.md` of the cwd (→ `- [x] `), append a line to
    /// `STATUS.md`, and reply `Completed <task>... **TASK_DONE**`. With no open box it replies
    /// without the marker and changes nothing.
    TickTask,
    /// Say `**TASK_DONE**` but change nothing (a liar).
    NeverTick,
    /// Write `TASKS.md` with these titles as `- [ ] TASK-001: title` lines and reply with a summary.
    WriteTasks(Vec<String>),
    /// Write this content to the named file (relative to cwd), then reply with a success result.
    WriteFile(String, String),
    /// Exit 1 with an API-error result: `subtype:"success"`, `is_error:true`, `api_error_status:500`,
    /// `result:"API Error: 500 ..."` (in text mode that text goes to stdout, as the real CLI does).
    Fail,
    /// Print nothing on stdout, write this to stderr, exit with this code.
    Crash(String, i32),
    /// Sleep forever, ignoring SIGTERM (`trap '' TERM`), so only SIGKILL of the group ends it.
    Hang,
    /// Start a grandchild `sleep 1000` in the background (pid in `./grandchild.pid`), then sleep
    /// forever (SIGTERM is not ignored).
    ForkGrandchildAndHang,
    /// A bash body of your own, run after argv handling. Available: `$PROMPT`, `$OUTPUT_FORMAT`,
    /// `$MODEL`, `$SESSION_ID`, `$PERMISSION_MODE`, `$ALLOWED_TOOLS`, `$FAKE_DIR`, `$FAKE_COST_USD`
    /// (set it before emitting to change `total_cost_usd`), `json_str TEXT`, and
    /// `emit_result TEXT [IS_ERROR=false] [API_ERROR_STATUS=null] [EXIT=0]`, which prints the result in
    /// the requested output format and exits. Falling off the end exits 0 with no output.
    Script(String),
}

/// Writes an executable named `claude` into `dir` (replacing any previous one atomically, so a fake
/// that is still running is not disturbed) and returns its path.
pub fn write_fake_claude(dir: &Path, behavior: Behavior) -> PathBuf {
    let dir = std::path::absolute(dir).expect("making the fake claude dir absolute");
    fs::create_dir_all(&dir).expect("creating the fake claude dir");
    let script = render(&dir, &behavior);

    // Writing an executable in-process and exec'ing it races with concurrent forks in other test
    // threads (the child inherits our write fd until its exec, so exec fails with ETXTBSY,
    // rust-lang/rust#114554). So only a scratch copy is written here; `cp` creates the file that is
    // executed, in a process no test thread forks from, and rename swaps it in atomically.
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let source = dir.join(format!(".claude.src.{unique}"));
    let staged = dir.join(format!(".claude.new.{unique}"));
    fs::write(&source, script).expect("writing the fake claude script");
    let status = Command::new("cp")
        .arg(&source)
        .arg(&staged)
        .stdin(Stdio::null())
        .status()
        .expect("running cp for the fake claude script");
    assert!(
        status.success(),
        "cp of the fake claude script failed: {status}"
    );
    fs::remove_file(&source).expect("removing the fake claude scratch copy");
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
        .expect("making the fake claude executable");
    let path = dir.join("claude");
    fs::rename(&staged, &path).expect("installing the fake claude");
    path
}

/// The argv of every invocation of the fake in `dir`, oldest first (empty if it never ran).
pub fn argv_log(dir: &Path) -> Vec<Vec<String>> {
    read_argv_log(&dir.join(ARGV_LOG))
}

/// Parses an argv log (`$FAKE_CLAUDE_LOG`, [`ARGV_LOG`] or [`CWD_ARGV_LOG`]); missing file = empty.
pub fn read_argv_log(path: &Path) -> Vec<Vec<String>> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Vec<String>>(line)
                .unwrap_or_else(|e| panic!("bad argv log line {line:?} in {}: {e}", path.display()))
        })
        .collect()
}

/// The prompt of every invocation of the fake in `dir` (argv and stdin, as the real CLI joins them).
pub fn prompt_log(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("fake_claude_prompts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str::<String>(line).expect("a JSON string per line"))
        .collect()
}

/// The `env` output of every invocation of the fake in `dir`, one string per invocation.
pub fn env_log(dir: &Path) -> Vec<String> {
    read_env_log(&dir.join(ENV_LOG))
}

/// Splits an env log (`$FAKE_CLAUDE_ENV_LOG` or [`ENV_LOG`]) into one block per invocation.
/// Note that bash itself adds `PWD`, `SHLVL` and `_` to what the caller passed.
pub fn read_env_log(path: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.split(&format!("{ENV_LOG_SEPARATOR}\n"))
        .filter(|block| !block.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Quotes a string for bash as one word, e.g. to build a `Behavior::Script` body.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The behaviour-specific bash body; it runs after the shared argv handling in [`PREAMBLE`].
fn body(behavior: &Behavior) -> String {
    match behavior {
        Behavior::Reply(text) => format!("emit_result {}\n", sh_quote(text)),
        Behavior::TickTask => TICK_TASK.to_owned(),
        Behavior::NeverTick => {
            "FAKE_TASK_DONE=true\nemit_result 'I implemented the task and verified it works. **TASK_DONE**'\n".to_owned()
        }
        Behavior::WriteTasks(titles) => {
            let mut tasks = String::from("# Tasks\n\n");
            let mut summary = format!("Created TASKS.md with {} tasks:", titles.len());
            for (i, title) in titles.iter().enumerate() {
                tasks.push_str(&format!("- [ ] TASK-{:03}: {title}\n", i + 1));
                summary.push_str(&format!("\nTASK-{:03}: {title}", i + 1));
            }
            format!(
                "printf '%s' {} > TASKS.md\nemit_result {}\n",
                sh_quote(&tasks),
                sh_quote(&summary)
            )
        }
        Behavior::WriteFile(name, content) => format!(
            "mkdir -p -- \"$(dirname -- {name})\"\nprintf '%s' {content} > {name}\nemit_result {reply}\n",
            name = sh_quote(name),
            content = sh_quote(content),
            reply = sh_quote(&format!("Wrote {name}.")),
        ),
        Behavior::Fail => {
            let text = r#"API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_fake_500"}"#;
            format!(
                "FAKE_COST_USD=0\nemit_result {} true 500 1\n",
                sh_quote(text)
            )
        }
        Behavior::Crash(stderr, code) => {
            format!("printf '%s\\n' {} >&2\nexit {code}\n", sh_quote(stderr))
        }
        // `sleep` inherits the ignored SIGTERM, so the whole group survives a TERM.
        Behavior::Hang => "trap '' TERM\nwhile :; do sleep 3600; done\n".to_owned(),
        Behavior::ForkGrandchildAndHang => concat!(
            "sleep 1000 &\n",
            // Written via rename so a polling test never reads a half-written pid.
            "printf '%s\\n' \"$!\" > grandchild.pid.tmp && mv grandchild.pid.tmp grandchild.pid\n",
            "while :; do sleep 3600; done\n",
        )
        .to_owned(),
        Behavior::Script(script) => format!("{script}\nexit 0\n"),
    }
}

fn behavior_name(behavior: &Behavior) -> &'static str {
    match behavior {
        Behavior::Reply(_) => "Reply",
        Behavior::TickTask => "TickTask",
        Behavior::NeverTick => "NeverTick",
        Behavior::WriteTasks(_) => "WriteTasks",
        Behavior::WriteFile(..) => "WriteFile",
        Behavior::Fail => "Fail",
        Behavior::Crash(..) => "Crash",
        Behavior::Hang => "Hang",
        Behavior::ForkGrandchildAndHang => "ForkGrandchildAndHang",
        Behavior::Script(_) => "Script",
    }
}

fn render(dir: &Path, behavior: &Behavior) -> String {
    let dir = dir
        .to_str()
        .expect("the fake claude dir must be valid UTF-8");
    format!(
        "#!/usr/bin/env bash\n# Fake `claude` written by tests/common/fake_claude.rs (behaviour: {name}).\nFAKE_DIR={dir}\nENV_LOG_SEPARATOR={sep}\n{PREAMBLE}\n# ---- behaviour: {name} ----\n{body}",
        name = behavior_name(behavior),
        dir = sh_quote(dir),
        sep = sh_quote(ENV_LOG_SEPARATOR),
        body = body(behavior),
    )
}

/// Tick the first open box. Pure bash (no sed/awk) so it works with any PATH.
const TICK_TASK: &str = r#"if [ ! -f TASKS.md ]; then
  emit_result "There is no TASKS.md in $PWD, so there is nothing to do."
fi
ticked=''
lines=()
while IFS= read -r line || [ -n "$line" ]; do
  if [ -z "$ticked" ] && [[ $line =~ ^[[:space:]]*-\ \[\ \]\  ]]; then
    ticked=${line#*'- [ ] '}
    line=${line/'- [ ] '/'- [x] '}
  fi
  lines+=("$line")
done < TASKS.md
if [ -z "$ticked" ]; then
  emit_result 'Every task in TASKS.md is already ticked; nothing to do.'
fi
printf '%s\n' "${lines[@]}" > TASKS.md
printf -- '- Completed %s\n' "$ticked" >> STATUS.md
FAKE_TASK_DONE=true
emit_result "Completed $ticked, ticked it in TASKS.md and noted it in STATUS.md. **TASK_DONE**"
"#;

/// Shared by every fake: logging, argv parsing like the real CLI (commander.js), the root refusal,
/// stdin handling and the result printer.
const PREAMBLE: &str = r#"
# Log before touching the environment, so the env log shows exactly what the caller passed.
if [ -n "${FAKE_CLAUDE_ENV_LOG:-}" ]; then { env; printf '%s\n' "$ENV_LOG_SEPARATOR"; } >> "$FAKE_CLAUDE_ENV_LOG"; fi
{ env; printf '%s\n' "$ENV_LOG_SEPARATOR"; } >> "$FAKE_DIR/fake_claude_env.log"
export PATH="${PATH:-/usr/bin:/bin}"

# JSON string escaping in pure bash; bytewise (LC_ALL=C) so UTF-8 passes through untouched.
json_str() {
  local LC_ALL=C s=$1 out='' c i
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      if [[ $c == [$'\x01'-$'\x1f'] ]]; then printf -v c '\\u%04x' "'$c"; fi
      out+=$c
    done
    s=$out
  fi
  printf '"%s"' "$s"
}
json_argv() {
  local first=1 a
  printf '['
  for a in "$@"; do
    if [ "$first" = 1 ]; then first=0; else printf ','; fi
    json_str "$a"
  done
  printf ']'
}

ARGV_JSON=$(json_argv "$@")
printf '%s\n' "$ARGV_JSON" >> "$FAKE_DIR/fake_claude_argv.jsonl"
if [ -n "${FAKE_CLAUDE_LOG:-}" ]; then printf '%s\n' "$ARGV_JSON" >> "$FAKE_CLAUDE_LOG"; fi
# The real CLI writes nothing into the project, so hide this log from git (status, add -A, diffs).
printf '%s\n' "$ARGV_JSON" >> ./.fake_claude_argv.jsonl 2>/dev/null
if [ -d .git/info ] && ! grep -qxF .fake_claude_argv.jsonl .git/info/exclude 2>/dev/null; then
  printf '%s\n' .fake_claude_argv.jsonl >> .git/info/exclude
fi

argv_error() { printf '%s\n' "$1" >&2; exit 1; }

PRINT=0; VERBOSE=0; SKIP_PERMISSIONS=0; HAVE_PROMPT=0
JSON_SCHEMA=''; FAKE_TASK_DONE=false; FAKE_STRUCTURED=''
PROMPT=''; OUTPUT_FORMAT=text; MODEL=claude-opus-4-8; PERMISSION_MODE=default; SESSION_ID=''; ALLOWED_TOOLS=''
BOOL_FLAGS=' -p --print --verbose --dangerously-skip-permissions --allow-dangerously-skip-permissions --no-session-persistence --strict-mcp-config --include-partial-messages --replay-user-messages -c --continue --bare --disable-slash-commands --ide --fork-session -h --help -v --version '
VALUE_FLAGS=' --output-format --input-format --model --fallback-model --effort --max-turns --max-budget-usd --append-system-prompt --append-system-prompt-file --system-prompt --system-prompt-file --permission-mode -r --resume --session-id --json-schema --settings --setting-sources --permission-prompt-tool --agents --agent --plugin-dir '
# Commander optional-value options (`[value]`) take the next word only if it is not an option.
OPTIONAL_VALUE_FLAGS=' -d --debug '
# Commander variadic options (`<values...>`) swallow every following word that is not an option.
VARIADIC_FLAGS=' --allowedTools --allowed-tools --disallowedTools --disallowed-tools --tools --add-dir --mcp-config --betas '

set_option() {
  case $1 in
    -p|--print) PRINT=1 ;;
    --verbose) VERBOSE=1 ;;
    --dangerously-skip-permissions|--allow-dangerously-skip-permissions) SKIP_PERMISSIONS=1 ;;
    -h|--help) printf 'Usage: claude [options] [command] [prompt]\n(fake claude for tests)\n'; exit 0 ;;
    -v|--version) printf '2.1.329 (Claude Code)\n'; exit 0 ;;
    --output-format)
      case $2 in
        text|json|stream-json) OUTPUT_FORMAT=$2 ;;
        *) argv_error "error: option '--output-format <format>' argument '$2' is invalid. Allowed choices are text, json, stream-json." ;;
      esac ;;
    --permission-mode)
      case $2 in
        acceptEdits|auto|bypassPermissions|default|dontAsk|plan) PERMISSION_MODE=$2 ;;
        *) argv_error "error: option '--permission-mode <mode>' argument '$2' is invalid. Allowed choices are acceptEdits, auto, bypassPermissions, default, dontAsk, plan." ;;
      esac ;;
    --model) MODEL=$2 ;;
    --session-id) SESSION_ID=$2 ;;
    --json-schema) JSON_SCHEMA=$2 ;;
    --allowedTools|--allowed-tools) ALLOWED_TOOLS="${ALLOWED_TOOLS:+$ALLOWED_TOOLS,}$2" ;;
  esac
}

args=("$@")
n=${#args[@]}
i=0
only_positionals=0
while [ "$i" -lt "$n" ]; do
  a=${args[$i]}
  i=$((i + 1))
  if [ "$only_positionals" = 0 ] && [ "$a" = -- ]; then only_positionals=1; continue; fi
  if [ "$only_positionals" = 1 ] || [[ $a != -* ]] || [ "$a" = - ]; then
    if [ "$HAVE_PROMPT" = 1 ]; then
      argv_error "error: too many arguments. Expected 1 argument but got more (extra: '$a')."
    fi
    PROMPT=$a; HAVE_PROMPT=1
    continue
  fi
  if [[ $a == --*=* ]]; then
    name=${a%%=*}; value=${a#*=}
    if [[ $VALUE_FLAGS == *" $name "* || $VARIADIC_FLAGS == *" $name "* || $OPTIONAL_VALUE_FLAGS == *" $name "* ]]; then
      set_option "$name" "$value"
    else
      argv_error "error: unknown option '$a'"
    fi
  elif [[ $BOOL_FLAGS == *" $a "* ]]; then
    set_option "$a"
  elif [[ $VALUE_FLAGS == *" $a "* ]]; then
    [ "$i" -lt "$n" ] || argv_error "error: option '$a <value>' argument missing"
    set_option "$a" "${args[$i]}"
    i=$((i + 1))
  elif [[ $OPTIONAL_VALUE_FLAGS == *" $a "* ]]; then
    if [ "$i" -lt "$n" ] && [[ ${args[$i]} != -* ]]; then i=$((i + 1)); fi
  elif [[ $VARIADIC_FLAGS == *" $a "* ]]; then
    taken=0
    while [ "$i" -lt "$n" ] && [[ ${args[$i]} != -* ]]; do
      set_option "$a" "${args[$i]}"
      i=$((i + 1)); taken=$((taken + 1))
    done
    [ "$taken" -gt 0 ] || argv_error "error: option '$a <values...>' argument missing"
  else
    argv_error "error: unknown option '$a'"
  fi
done

if [ "$PRINT" != 1 ]; then
  argv_error "fake claude: only headless mode is emulated; pass -p/--print"
fi
if [ "$OUTPUT_FORMAT" = stream-json ] && [ "$VERBOSE" != 1 ]; then
  argv_error "Error: When using --print, --output-format=stream-json requires --verbose"
fi
if [ "$EUID" = 0 ] && [ "${IS_SANDBOX:-}" != 1 ] && { [ "$SKIP_PERMISSIONS" = 1 ] || [ "$PERMISSION_MODE" = bypassPermissions ]; }; then
  argv_error "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
fi
# Like the real CLI: a non-TTY stdin is read and appended to the prompt; an open pipe that stays
# silent costs 3 s and a warning (spawn with stdin null to avoid it).
if [ ! -t 0 ]; then
  stdin_data=''
  IFS= read -r -d '' -t 3 stdin_data
  if [ "$?" -gt 128 ] && [ -z "$stdin_data" ]; then
    printf 'Warning: no stdin data received in 3s, proceeding without it. If piping from a slow command, redirect stdin explicitly: < /dev/null to skip, or wait longer.\n' >&2
  fi
  stdin_data=${stdin_data%$'\n'}
  if [ -n "$stdin_data" ]; then
    if [ "$HAVE_PROMPT" = 1 ]; then PROMPT="$PROMPT"$'\n'"$stdin_data"; else PROMPT=$stdin_data; HAVE_PROMPT=1; fi
  fi
fi
if [ -z "$PROMPT" ]; then
  argv_error "Error: Input must be provided either through stdin or as a prompt argument when using --print"
fi
# The prompt as the CLI saw it (argv and stdin joined), for tests of what reached the model.
printf '%s\n' "$(json_str "$PROMPT")" >> "$FAKE_DIR/fake_claude_prompts.jsonl"

if [ -z "$SESSION_ID" ]; then
  printf -v SESSION_ID '%04x%04x-%04x-4%03x-a%03x-%04x%04x%04x' $RANDOM $RANDOM $RANDOM $((RANDOM % 4096)) $((RANDOM % 4096)) $RANDOM $RANDOM $RANDOM
fi
FAKE_COST_USD=0.0123

# emit_result TEXT [IS_ERROR] [API_ERROR_STATUS] [EXIT]: print the result in the requested format, exit.
emit_result() {
  local text=$1 is_error=${2:-false} api_status=${3:-null} code=${4:-0} result stop init assistant usage
  if [ "$is_error" = true ]; then stop=null; usage='{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}'
  else stop='"end_turn"'; usage='{"input_tokens":1000,"output_tokens":100,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}'; fi
  local structured=''
  # With --json-schema the answer also comes as `structured_output` (the fake's verdict says
  # whether it finished its task; a script may set FAKE_STRUCTURED to any JSON).
  if [ -n "$JSON_SCHEMA" ] && [ "$is_error" != true ]; then
    if [ -n "$FAKE_STRUCTURED" ]; then structured=",\"structured_output\":$FAKE_STRUCTURED"
    else structured=",\"structured_output\":{\"task_done\":$FAKE_TASK_DONE,\"summary\":$(json_str "$text")}"; fi
  fi
  result="{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":$is_error,\"api_error_status\":$api_status,\"duration_ms\":1234,\"duration_api_ms\":1100,\"num_turns\":1,\"result\":$(json_str "$text"),\"stop_reason\":$stop,\"session_id\":\"$SESSION_ID\",\"total_cost_usd\":$FAKE_COST_USD,\"usage\":$usage,\"permission_denials\":[]$structured}"
  init="{\"type\":\"system\",\"subtype\":\"init\",\"cwd\":$(json_str "$PWD"),\"session_id\":\"$SESSION_ID\",\"tools\":[\"Bash\",\"Edit\",\"Read\",\"Write\"],\"model\":$(json_str "$MODEL"),\"permissionMode\":$(json_str "$PERMISSION_MODE")}"
  assistant="{\"type\":\"assistant\",\"message\":{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\",\"model\":$(json_str "$MODEL"),\"content\":[{\"type\":\"text\",\"text\":$(json_str "$text")}]},\"session_id\":\"$SESSION_ID\"}"
  case $OUTPUT_FORMAT in
    text) printf '%s\n' "$text" ;;
    json) if [ "$VERBOSE" = 1 ]; then printf '[%s,%s,%s]\n' "$init" "$assistant" "$result"; else printf '%s\n' "$result"; fi ;;
    stream-json) printf '%s\n%s\n%s\n' "$init" "$assistant" "$result" ;;
  esac
  exit "$code"
}
"#;
