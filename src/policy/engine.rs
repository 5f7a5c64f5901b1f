//! The sandboxed Rhai engine every policy runs in.
//!
//! Built from a raw engine with only the pure packages a policy needs: no
//! module import, no `eval`, no `sleep`, no output to stdout. Limits bound
//! every evaluation, and strict variables and map properties make a typo an
//! error (and so a denial) instead of a silently different decision.

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicIteratorPackage, BasicMapPackage,
    BasicStringPackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Engine, EvalAltResult};

use super::{Verdict, helpers};

/// Most operations one call may take before it is stopped.
pub const MAX_OPERATIONS: u64 = 200_000;

/// Builds the engine: pure packages, policy helpers, limits, strictness.
pub fn sandboxed() -> Engine {
    let mut engine = Engine::new_raw();

    engine.register_global_module(ArithmeticPackage::new().as_shared_module());
    engine.register_global_module(LogicPackage::new().as_shared_module());
    engine.register_global_module(BasicStringPackage::new().as_shared_module());
    engine.register_global_module(MoreStringPackage::new().as_shared_module());
    engine.register_global_module(BasicIteratorPackage::new().as_shared_module());
    engine.register_global_module(BasicArrayPackage::new().as_shared_module());
    engine.register_global_module(BasicMapPackage::new().as_shared_module());

    engine.disable_symbol("eval");
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);

    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(32);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(64 * 1024);
    engine.set_max_array_size(10_000);
    engine.set_max_map_size(10_000);
    engine.set_max_modules(0);

    engine.on_print(|text| tracing::info!(target: "policy", "{text}"));
    engine.on_debug(|text, source, pos| {
        tracing::debug!(target: "policy", source = source.unwrap_or(""), %pos, "{text}");
    });

    engine.register_type_with_name::<Verdict>("Verdict");
    engine.register_fn("allow", || Verdict::Allow);
    engine.register_fn("deny", |reason: &str| Verdict::Deny(reason.to_owned()));
    helpers::register(&mut engine);

    engine
}

/// A one-line, classed description of why an evaluation failed.
pub fn describe_failure(err: &EvalAltResult) -> String {
    let class = match err {
        EvalAltResult::ErrorTooManyOperations(..) => "operation limit",
        EvalAltResult::ErrorDataTooLarge(..) => "size limit",
        EvalAltResult::ErrorStackOverflow(..) => "call depth limit",
        EvalAltResult::ErrorRuntime(..) => "thrown by script",
        _ => "runtime error",
    };
    format!("{class}: {err}")
}
