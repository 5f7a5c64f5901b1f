//! One evaluation of one script function, and everything it leaves behind.
//!
//! Scripts run synchronously on the calling thread, so the per-evaluation
//! state the engine's callbacks need (the deadline, captured prints,
//! warnings, which verdict calls were reached) lives in a thread-local frame
//! that exists only for the duration of one call. Every way a call can fail
//! is mapped to a [`FailureClass`], and every failure is a denial upstream.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, FuncArgs, Scope};

/// Longest wall-clock time one script function may run.
pub const DEADLINE: Duration = Duration::from_millis(100);

/// Most lines of `print`/`debug` output kept per evaluation.
const MAX_CAPTURED_LINES: usize = 100;

/// Why a script produced no usable verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    CompileError,
    RuntimeError,
    ThrownByScript,
    OperationLimit,
    Deadline,
    SizeLimit,
    DepthLimit,
    InvalidReturnType,
}

impl FailureClass {
    pub const ALL: [FailureClass; 8] = [
        Self::CompileError,
        Self::RuntimeError,
        Self::ThrownByScript,
        Self::OperationLimit,
        Self::Deadline,
        Self::SizeLimit,
        Self::DepthLimit,
        Self::InvalidReturnType,
    ];

    /// The class as written in status messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CompileError => "compile error",
            Self::RuntimeError => "runtime error",
            Self::ThrownByScript => "thrown by script",
            Self::OperationLimit => "operation limit",
            Self::Deadline => "deadline",
            Self::SizeLimit => "size limit",
            Self::DepthLimit => "depth limit",
            Self::InvalidReturnType => "invalid return type",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: its class and a one-line description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

/// What the caller wants kept besides the verdict.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capture {
    /// Keep `print`/`debug` lines (dry runs and tests); they always go to the log.
    pub output: bool,
    /// Record which verdict calls were reached (`policy test`).
    pub coverage: bool,
}

/// What one evaluation left behind.
#[derive(Clone, Debug, Default)]
pub struct Trail {
    pub warnings: Vec<String>,
    pub output: Vec<String>,
    /// `(file, line)` of every verdict call reached.
    pub reached: Vec<(String, usize)>,
}

struct Frame {
    file: Arc<str>,
    deadline: Instant,
    capture: Capture,
    trail: Trail,
}

thread_local! {
    static FRAME: RefCell<Option<Frame>> = const { RefCell::new(None) };
}

/// Calls `function` of `ast` (a script named `file`) with `args`, bounded by
/// the engine's limits and [`DEADLINE`]; appends what it left to `trail`.
pub fn call(
    engine: &Engine,
    ast: &AST,
    file: &Arc<str>,
    function: &str,
    args: impl FuncArgs,
    capture: Capture,
    trail: &mut Trail,
) -> Result<Dynamic, Failure> {
    let frame = Frame {
        file: file.clone(),
        deadline: Instant::now() + DEADLINE,
        capture,
        trail: std::mem::take(trail),
    };
    FRAME.with(|f| *f.borrow_mut() = Some(frame));

    // Policy ASTs hold functions only, so there is no top level to evaluate.
    let options = CallFnOptions::new().eval_ast(false).rewind_scope(false);
    let result =
        engine.call_fn_with_options::<Dynamic>(options, &mut Scope::new(), ast, function, args);

    let frame = FRAME.with(|f| f.borrow_mut().take());
    if let Some(frame) = frame {
        *trail = frame.trail;
    }
    result.map_err(|err| classify(&err))
}

/// The engine's progress hook: stops a call that passed its deadline.
/// Checked every 256 operations, so the hook stays cheap.
pub fn past_deadline(operations: u64) -> Option<Dynamic> {
    if !operations.is_multiple_of(256) {
        return None;
    }
    let late = FRAME.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|frame| Instant::now() > frame.deadline)
    });
    late.then(|| Dynamic::from("deadline"))
}

/// Records a `warn(...)` call.
pub fn warn(message: String) {
    with_frame(|frame| frame.trail.warnings.push(message));
}

/// Records a `print`/`debug` line when output is captured, and logs it.
pub fn output(line: &str) {
    let file = with_frame(|frame| {
        if frame.capture.output && frame.trail.output.len() < MAX_CAPTURED_LINES {
            frame.trail.output.push(line.to_owned());
        }
        frame.file.clone()
    });
    let file = file.as_deref().unwrap_or("");
    tracing::info!(target: "policy", policy = file, "{line}");
}

/// Records that a verdict call at `line` was reached, when coverage is on.
pub fn reached(line: Option<usize>) {
    with_frame(|frame| {
        if let (true, Some(line)) = (frame.capture.coverage, line) {
            frame.trail.reached.push((frame.file.to_string(), line));
        }
    });
}

fn with_frame<T>(f: impl FnOnce(&mut Frame) -> T) -> Option<T> {
    FRAME.with(|cell| cell.borrow_mut().as_mut().map(f))
}

/// Maps an engine error to its class, looking through errors raised inside
/// nested function calls.
fn classify(err: &EvalAltResult) -> Failure {
    let message = match innermost(err) {
        EvalAltResult::ErrorTooManyModules(pos) if pos.is_none() => {
            "import is not available to policies".to_owned()
        }
        EvalAltResult::ErrorTooManyModules(pos) => {
            format!("import is not available to policies ({pos})")
        }
        _ => one_line(&err.to_string()),
    };
    let class = match innermost(err) {
        EvalAltResult::ErrorTooManyOperations(..) => FailureClass::OperationLimit,
        EvalAltResult::ErrorTerminated(..) => FailureClass::Deadline,
        EvalAltResult::ErrorDataTooLarge(..) => FailureClass::SizeLimit,
        EvalAltResult::ErrorStackOverflow(..) => FailureClass::DepthLimit,
        EvalAltResult::ErrorRuntime(..) => FailureClass::ThrownByScript,
        _ => FailureClass::RuntimeError,
    };
    Failure { class, message }
}

fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        other => other,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
