//! The sandboxed Rhai engine every policy runs in.
//!
//! Built from a raw engine with only the pure packages a policy needs: no
//! module import, no `eval`, no `sleep`, no output to stdout. Limits bound
//! every call, a progress hook enforces a wall-clock deadline, and strict
//! variables and map properties turn a typo into an error (and so a denial)
//! instead of a silently different decision.

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicIteratorPackage, BasicMapPackage,
    BasicStringPackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Engine, Module, NativeCallContext};

use super::eval;
use super::helpers;
use super::input;
use super::verdict::{Retention, Verdict};

/// Most operations one call may take before it is stopped.
pub const MAX_OPERATIONS: u64 = 200_000;
/// Deepest nesting of script function calls.
pub const MAX_CALL_LEVELS: usize = 32;
/// Largest string a script may build, in bytes.
pub const MAX_STRING_SIZE: usize = 64 * 1024;
/// Most elements of an array or map a script may build.
pub const MAX_COLLECTION_SIZE: usize = 10_000;

/// Builds the engine: pure packages, policy functions, limits, strictness.
pub fn sandboxed() -> Engine {
    let mut engine = Engine::new_raw();

    engine.register_global_module(pure_packages().into());

    engine.disable_symbol("eval");
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);

    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_COLLECTION_SIZE);
    engine.set_max_map_size(MAX_COLLECTION_SIZE);
    engine.set_max_modules(0);
    engine.set_max_variables(256);
    engine.set_max_functions(256);

    engine.on_progress(eval::past_deadline);
    engine.on_print(eval::output);
    engine.on_debug(|text, _source, pos| eval::output(&format!("debug {pos}: {text}")));

    register_verdicts(&mut engine);
    helpers::register(&mut engine);
    input::register(&mut engine);
    engine
}

/// The packages policies may use, merged into one module: function lookup
/// then searches one index instead of one per package, which is a large part
/// of the cost of a call.
fn pure_packages() -> Module {
    let packages = [
        ArithmeticPackage::new().as_shared_module(),
        LogicPackage::new().as_shared_module(),
        BasicStringPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
        BasicIteratorPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
    ];
    let mut merged = Module::new();
    for package in packages {
        merged.combine_flatten((*package).clone());
    }
    merged.build_index();
    merged
}

/// `allow`, `deny`, `warn` for admission; `keep`, `keep_for`, `delete` for
/// retention. Each records where it was called, for rule coverage.
fn register_verdicts(engine: &mut Engine) {
    engine.register_type_with_name::<Verdict>("Verdict");
    engine.register_type_with_name::<Retention>("Retention");

    engine.register_fn("allow", |ctx: NativeCallContext| {
        eval::reached(ctx.call_position().line());
        Verdict::Allow
    });
    engine.register_fn("deny", |ctx: NativeCallContext, reason: &str| {
        eval::reached(ctx.call_position().line());
        let reason = match reason.trim() {
            "" => "(no reason given)",
            text => text,
        };
        Verdict::Deny(reason.to_owned())
    });
    engine.register_fn("warn", |message: &str| eval::warn(message.to_owned()));

    engine.register_fn("keep", |ctx: NativeCallContext| {
        eval::reached(ctx.call_position().line());
        Retention::Keep
    });
    engine.register_fn("delete", |ctx: NativeCallContext| {
        eval::reached(ctx.call_position().line());
        Retention::Delete
    });
    engine.register_fn("keep_for", |ctx: NativeCallContext, duration: &str| {
        eval::reached(ctx.call_position().line());
        helpers::parse_duration(duration).map(Retention::KeepFor)
    });
}
