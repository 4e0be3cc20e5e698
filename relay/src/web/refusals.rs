//! What the web listener refuses, by kind: each kind logged through a
//! gate of its own (a flood of wrong sign-ins must not hide the one
//! forged action that follows it) and counted for `/metrics`
//! (`ferry_web_refusals_total{reason}`), so an operator can alert on a
//! flood the log only samples.

use std::sync::Arc;

use super::LogGate;
use crate::telemetry::Telemetry;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sign-in form was sent a wrong token.
    SignIn,
    /// A bearer token was missing or wrong.
    Bearer,
    /// The `Host` was not one this listener answers to.
    Host,
    /// An action without a valid login or CSRF token.
    Action,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::SignIn,
        Refusal::Bearer,
        Refusal::Host,
        Refusal::Action,
    ];

    /// The metric's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::SignIn => "sign-in",
            Refusal::Bearer => "bearer",
            Refusal::Host => "host",
            Refusal::Action => "action",
        }
    }
}

/// The refusals' log gates and counters.
#[derive(Debug)]
pub struct Refusals {
    gates: [LogGate; Refusal::ALL.len()],
    telemetry: Arc<Telemetry>,
}

impl Refusals {
    /// Refusals counted in `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Refusals {
            gates: Default::default(),
            telemetry,
        }
    }

    /// Counts a refusal of `kind` and logs `line`, unless a line of the
    /// same kind was logged less than [`LogGate::EVERY`] ago.
    pub fn note(&self, kind: Refusal, line: std::fmt::Arguments<'_>) {
        self.telemetry.web_refused(kind.label());
        self.gates[kind as usize].warn(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_gate_and_every_refusal_is_counted() {
        let telemetry = Arc::new(Telemetry::default());
        let refusals = Refusals::new(Arc::clone(&telemetry));
        for _ in 0..5 {
            refusals.note(Refusal::SignIn, format_args!("wrong token"));
        }
        refusals.note(Refusal::Action, format_args!("forged"));
        let count = |kind: Refusal| {
            telemetry
                .web_refusals
                .get_or_create(&crate::telemetry::ReasonLabel {
                    reason: kind.label(),
                })
                .get()
        };
        assert_eq!((count(Refusal::SignIn), count(Refusal::Action)), (5, 1));
        // The sign-ins closed their own gate, not the action's.
        let gate = |kind: Refusal| refusals.gates[kind as usize].held_back();
        assert_eq!((gate(Refusal::SignIn), gate(Refusal::Action)), (4, 0));
    }
}
