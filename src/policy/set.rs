//! A compiled, immutable set of policies and how it is evaluated.
//!
//! Sets are built whole and never changed: a reload builds a new set and
//! swaps it in, so an evaluation always sees one consistent set. Building
//! keeps going past a file that does not compile: that file keeps its last
//! good version from the previous set, or, if it never compiled, denies every
//! request. The set's content hash covers exactly the texts in effect.

use std::sync::{Arc, LazyLock, Mutex};

use rhai::{AST, Dynamic, Engine};
use sha2::{Digest, Sha256};

use super::eval::{self, Capture, Failure, FailureClass, Trail};
use super::input::{ConfigView, RunView, ScriptRequest};
use super::verdict::{Decision, Retention, Verdict};
use super::{CompileError, SourceFile, engine};
use crate::api::{InternalRequest, InternalServicesConfigSpec};

/// Entry points a policy may define, each taking two arguments.
pub const ADMIT: &str = "admit";
pub const ADMIT_RESOLVER: &str = "admit_resolver";
pub const RETAIN: &str = "retain";

/// File names ending in this are in audit mode: their denials are warnings.
pub const AUDIT_SUFFIX: &str = ".audit.rhai";

/// Rule name reported when a resolver-form request has no policy for it.
pub const RESOLVER_RULE: &str = "resolver-form";

/// Rule name reported when the source holds no policy at all.
pub const NO_POLICIES: &str = "policy-source";

/// Rule name reported when every policy allowed.
pub const ALL_POLICIES: &str = "all policies";

static ENGINE: LazyLock<Arc<Engine>> = LazyLock::new(|| Arc::new(engine::sandboxed()));

/// The one sandboxed engine every set compiles and runs with.
pub(super) fn shared_engine() -> &'static Engine {
    ENGINE.as_ref()
}

#[derive(Clone)]
struct Policy {
    file: Arc<str>,
    audit: bool,
    text: Arc<str>,
    body: Body,
}

#[derive(Clone)]
enum Body {
    Ready {
        ast: Arc<AST>,
        admit: bool,
        admit_resolver: bool,
        retain: bool,
    },
    Broken(CompileError),
}

/// Every policy of one source, ready to evaluate from any thread.
#[derive(Clone)]
pub struct PolicySet {
    policies: Arc<Vec<Policy>>,
    hash: Arc<str>,
    /// The last config converted to a script value; configs change rarely,
    /// so most decisions reuse it.
    config_cache: Arc<Mutex<Option<(InternalServicesConfigSpec, Dynamic)>>>,
}

/// The result of building a set.
pub struct Build {
    pub set: PolicySet,
    /// Files that did not compile, whatever stands in for them.
    pub errors: Vec<CompileError>,
    /// Files whose previous version stays in effect because the new one failed.
    pub kept: Vec<String>,
}

/// What the set decided about one request, and what the scripts left.
#[derive(Clone, Debug)]
pub struct AdmissionReport {
    pub decision: Decision,
    /// The deciding file or rule, or [`ALL_POLICIES`].
    pub decided_by: String,
    pub trail: Trail,
    /// Failures met on the way, for metrics; audit-mode ones included.
    pub failures: Vec<FailureClass>,
}

/// What the set decided about keeping one finished run.
#[derive(Clone, Debug)]
pub struct RetentionReport {
    pub retention: Retention,
    pub trail: Trail,
    /// Scripts that failed; their answer counts as `delete()`.
    pub failures: Vec<(String, Failure)>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("hash", &self.hash)
            .field("files", &self.files())
            .finish()
    }
}

impl PolicySet {
    /// A set with no policies: the core's checks alone decide.
    pub fn empty() -> Self {
        Self::build(Vec::new(), None).set
    }

    /// Compiles `files`; a file that fails keeps its version from `previous`
    /// if it had a good one there, and otherwise denies every request.
    pub fn build(mut files: Vec<SourceFile>, previous: Option<&PolicySet>) -> Build {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let (mut errors, mut kept) = (Vec::new(), Vec::new());

        let mut policies = Vec::with_capacity(files.len());
        for file in files {
            let old = previous.and_then(|p| p.policies.iter().find(|old| *old.file == *file.name));
            let unchanged = |o: &&Policy| {
                *o.text == *file.text
                    && matches!(o.body, Body::Ready { .. })
                    && file.unusable.is_none()
            };
            if let Some(old) = old.filter(unchanged) {
                policies.push(old.clone());
                continue;
            }
            match compile(&file) {
                Ok(policy) => policies.push(policy),
                Err(error) => {
                    errors.push(error.clone());
                    match old.filter(|o| matches!(o.body, Body::Ready { .. })) {
                        Some(good) => {
                            kept.push(file.name.clone());
                            policies.push(good.clone());
                        }
                        None => policies.push(broken(&file, error)),
                    }
                }
            }
        }

        let hash = content_hash(&policies);
        let set = PolicySet {
            policies: Arc::new(policies),
            hash: hash.into(),
            config_cache: Arc::default(),
        };
        Build { set, errors, kept }
    }

    /// Compiles `files`, failing on the first error (for offline tools).
    pub fn strict(files: Vec<SourceFile>) -> Result<Self, Vec<CompileError>> {
        let build = Self::build(files, None);
        match build.errors.is_empty() {
            true => Ok(build.set),
            false => Err(build.errors),
        }
    }

    /// Content hash of the texts in effect, as `sha256:<hex>`.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// File names, in evaluation order.
    pub fn files(&self) -> Vec<&str> {
        self.policies.iter().map(|p| &*p.file).collect()
    }

    /// The texts in effect, by file name (for coverage reports).
    pub fn texts(&self) -> Vec<(&str, &str)> {
        self.policies.iter().map(|p| (&*p.file, &*p.text)).collect()
    }

    /// Runs every admission policy in file order. The first denial of an
    /// enforcing policy decides; audit-mode denials become warnings. A
    /// resolver-form request also needs every `admit_resolver` to allow, and
    /// at least one enforcing policy to define it.
    ///
    /// CPU-bound and bounded by the engine's limits; call it off the async
    /// executor.
    pub fn admit(
        &self,
        request: &Arc<InternalRequest>,
        config: &InternalServicesConfigSpec,
        capture: Capture,
    ) -> AdmissionReport {
        let args = (
            Dynamic::from(ScriptRequest::new(request.clone())),
            self.config_value(config),
        );
        let resolver_form = request.spec.resolver().is_some();
        let mut report = AdmissionReport {
            decision: Decision::Allow,
            decided_by: ALL_POLICIES.to_owned(),
            trail: Trail::default(),
            failures: Vec::new(),
        };

        if self.policies.is_empty() {
            report.decided_by = NO_POLICIES.to_owned();
            report.decision = Decision::Deny {
                policy: NO_POLICIES.to_owned(),
                reason:
                    "no policies are loaded; requests are rejected until policy files are installed"
                        .to_owned(),
                failure: None,
            };
            return report;
        }

        let mut resolver_rule_seen = false;
        for policy in self.policies.iter() {
            let outcome = match &policy.body {
                Body::Broken(error) => Some(Err(broken_failure(error))),
                Body::Ready {
                    ast,
                    admit,
                    admit_resolver,
                    ..
                } => {
                    resolver_rule_seen |= resolver_form && *admit_resolver && !policy.audit;
                    let mut outcome = None;
                    if *admit {
                        outcome =
                            Some(self.verdict(policy, ast, ADMIT, &args, capture, &mut report));
                    }
                    let allowed_so_far = matches!(outcome, None | Some(Ok(Verdict::Allow)));
                    if resolver_form && *admit_resolver && allowed_so_far {
                        outcome = Some(self.verdict(
                            policy,
                            ast,
                            ADMIT_RESOLVER,
                            &args,
                            capture,
                            &mut report,
                        ));
                    }
                    outcome
                }
            };

            let denial = match outcome {
                None | Some(Ok(Verdict::Allow)) => continue,
                Some(Ok(Verdict::Deny(reason))) => (reason, None),
                Some(Err(failure)) => {
                    report.failures.push(failure.class);
                    (failure.message, Some(failure.class))
                }
            };
            if policy.audit {
                let (reason, _) = denial;
                report.trail.warnings.push(format!(
                    "audit: policy {} would deny: {reason}",
                    policy.file
                ));
                continue;
            }
            report.decided_by = policy.file.to_string();
            report.decision = Decision::Deny {
                policy: policy.file.to_string(),
                reason: denial.0,
                failure: denial.1,
            };
            return report;
        }

        if resolver_form && !resolver_rule_seen {
            report.decided_by = RESOLVER_RULE.to_owned();
            report.decision = Decision::Deny {
                policy: RESOLVER_RULE.to_owned(),
                reason: "requests using spec.pipeline.pipelineRef need a policy that defines \
                         admit_resolver(request, config); none is loaded"
                    .to_owned(),
                failure: None,
            };
        }
        report
    }

    /// Asks every retention policy how long to keep a finished run; the
    /// longest answer wins, and the default is to delete it now.
    pub fn retain(
        &self,
        run: &RunView,
        config: &InternalServicesConfigSpec,
        capture: Capture,
    ) -> RetentionReport {
        let args = (run.to_script(), self.config_value(config));
        let mut report = RetentionReport {
            retention: Retention::Delete,
            trail: Trail::default(),
            failures: Vec::new(),
        };

        for policy in self.policies.iter() {
            let Body::Ready {
                ast, retain: true, ..
            } = &policy.body
            else {
                continue;
            };
            let result = eval::call(
                shared_engine(),
                ast,
                &policy.file,
                RETAIN,
                args.clone(),
                capture,
                &mut report.trail,
            );
            let retention = result.and_then(|value| match value.is::<Retention>() {
                true => Ok(value.cast::<Retention>()),
                false => Err(Failure {
                    class: FailureClass::InvalidReturnType,
                    message: format!(
                        "retain returned {}; expected keep(), keep_for(duration) or delete()",
                        value.type_name()
                    ),
                }),
            });
            match retention {
                Ok(retention) => report.retention = report.retention.max(retention),
                Err(failure) => report.failures.push((policy.file.to_string(), failure)),
            }
        }
        report
    }

    /// The config as a shared, read-only script value, converted once per
    /// distinct config.
    fn config_value(&self, config: &InternalServicesConfigSpec) -> Dynamic {
        let mut cache = self.config_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, value)) = cache.as_ref()
            && cached == config
        {
            return value.clone();
        }
        let value = ConfigView(config).to_script();
        *cache = Some((config.clone(), value.clone()));
        value
    }

    fn verdict(
        &self,
        policy: &Policy,
        ast: &AST,
        function: &str,
        args: &(Dynamic, Dynamic),
        capture: Capture,
        report: &mut AdmissionReport,
    ) -> Result<Verdict, Failure> {
        let value = eval::call(
            ENGINE.as_ref(),
            ast,
            &policy.file,
            function,
            args.clone(),
            capture,
            &mut report.trail,
        )?;
        if !value.is::<Verdict>() {
            return Err(Failure {
                class: FailureClass::InvalidReturnType,
                message: format!(
                    "{function} returned {}; expected allow() or deny(reason)",
                    value.type_name()
                ),
            });
        }
        Ok(value.cast::<Verdict>())
    }
}

fn compile(file: &SourceFile) -> Result<Policy, CompileError> {
    if let Some(reason) = &file.unusable {
        return Err(CompileError {
            file: file.name.clone(),
            line: 0,
            column: 0,
            message: reason.clone(),
        });
    }
    let mut ast = ENGINE
        .compile(&*file.text)
        .map_err(|err| CompileError::from_parse(&file.name, &err))?;
    ast.set_source(file.name.as_str());

    let entry_points = entry_points(&file.name, &ast)?;
    let body = Body::Ready {
        admit: entry_points.contains(&ADMIT),
        admit_resolver: entry_points.contains(&ADMIT_RESOLVER),
        retain: entry_points.contains(&RETAIN),
        ast: Arc::new(ast.clone_functions_only()),
    };
    Ok(Policy {
        file: file.name.as_str().into(),
        audit: file.name.ends_with(AUDIT_SUFFIX),
        text: file.text.clone(),
        body,
    })
}

/// The entry points a compiled file defines. A file that defines none, or
/// one with the wrong parameters, is an error like a syntax error: a policy
/// that silently does nothing would be a rule that silently is not enforced.
pub(super) fn entry_points(file: &str, ast: &AST) -> Result<Vec<&'static str>, CompileError> {
    let error = |message: String| CompileError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        message,
    };
    let mut found = Vec::new();
    for function in ast.iter_functions() {
        let Some(name) = [ADMIT, ADMIT_RESOLVER, RETAIN]
            .into_iter()
            .find(|n| *n == function.name)
        else {
            continue;
        };
        if function.params.len() != 2 {
            let expected = if name == RETAIN {
                "(run, config)"
            } else {
                "(request, config)"
            };
            return Err(error(format!(
                "fn {name} takes {} parameters; it must take two: {name}{expected}",
                function.params.len()
            )));
        }
        found.push(name);
    }
    if found.is_empty() {
        return Err(error(
            "defines none of admit(request, config), admit_resolver(request, config) and retain(run, config)"
                .to_owned(),
        ));
    }
    Ok(found)
}

fn broken(file: &SourceFile, error: CompileError) -> Policy {
    Policy {
        file: file.name.as_str().into(),
        audit: file.name.ends_with(AUDIT_SUFFIX),
        text: file.text.clone(),
        body: Body::Broken(error),
    }
}

fn broken_failure(error: &CompileError) -> Failure {
    Failure {
        class: FailureClass::CompileError,
        message: format!("never compiled: {error}"),
    }
}

fn content_hash(policies: &[Policy]) -> String {
    let mut hasher = Sha256::new();
    for policy in policies {
        hasher.update(policy.file.as_bytes());
        hasher.update([0]);
        hasher.update(policy.text.as_bytes());
        hasher.update([0]);
        if matches!(policy.body, Body::Broken(_)) {
            hasher.update(b"broken\0");
        }
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}
