//! Webhook gates in the engine. A gate is asked by listing a call in the decision
//! (`Decision::asks`) and recording it as `Asked` in `status.webhooks`; the answer comes
//! back in a later `World` and is recorded before the engine acts on it, so what a
//! webhook said is on the API server before the weight it allowed (or the rollback it
//! caused) is written. A restart loses only calls in flight: they are asked again.

use std::time::Duration;

use jiff::Timestamp;

use super::analysing::gate_after;
use super::decider::{Decider, after, ts, until};
use crate::hooks::{HookKey, HookPlan, Reply};
use crate::plan::Plan;
use crate::spec::{FailurePolicy, WebhookKind};
use crate::state::CanaryAt;
use crate::status::{ASKED, WebhookRecord};
use crate::vocabulary::Reason;
use crate::windows::Gate;

/// What the webhooks of one kind say about going on.
pub(super) enum Said {
    /// Every one said yes (or there are none).
    Yes,
    /// An answer is awaited, or a no holds the canary; the message says which.
    Waiting(String),
    /// A no whose policy is to roll back; the reason names the webhook and its answer.
    No(String),
}

impl Decider {
    /// Asks the webhooks of `kind` about the canary's `step` (1-based), one after the
    /// other: each must say yes before the next is asked.
    pub(super) fn hooks_say(&mut self, plan: &Plan, kind: WebhookKind, revision: &str, step: u32) -> Said {
        for hook in plan.hooks_of(kind) {
            match self.ask(plan, hook, revision, step, None) {
                Said::Yes => continue,
                other => return other,
            }
        }
        Said::Yes
    }

    /// One webhook's say on (revision, step): from its record, from an answer that
    /// came, or by a call to make.
    fn ask(&mut self, plan: &Plan, hook: &HookPlan, revision: &str, step: u32, outcome: Option<&str>) -> Said {
        let record = self.record_of(&hook.name, revision, step).cloned();
        let round = match &record {
            None => 0,
            Some(r) if r.answer == ASKED => r.round,
            Some(r) if r.answer == Reply::Yes.as_str() || hook.kind == WebhookKind::PostRollout => {
                return Said::Yes;
            }
            Some(r) => {
                // A no on hold: asked again one interval after it came.
                let again = r.at.parse::<Timestamp>().map_or(self.now, |t| after(t, plan.interval));
                if self.now < again {
                    self.wake_at(again);
                    return Said::Waiting(on_hold(hook, r, again));
                }
                r.round + 1
            }
        };
        let key = HookKey {
            hook: hook.name.clone(),
            revision: revision.to_string(),
            step,
            round,
        };
        if let Some(answer) = self.seen.answers.iter().find(|a| a.key == key).cloned() {
            self.record(hook, &key, answer.reply.as_str(), &answer.detail, answer.attempts);
            return match answer.reply {
                Reply::Yes => Said::Yes,
                _ => self.refused(plan, hook, &answer.detail, answer.reply),
            };
        }
        let confirmation = matches!(hook.kind, WebhookKind::ConfirmStep | WebhookKind::ConfirmPromotion);
        if record.is_none() && confirmation {
            self.event(
                false,
                Reason::WaitingForConfirmation,
                format!(
                    "revision {revision}: step {step} passed; webhook {} ({}) is asked to confirm (or run `weir promote`)",
                    hook.name,
                    hook.kind.as_str()
                ),
            );
        }
        if record.is_none_or(|r| r.answer != ASKED || r.round != round) {
            self.record(hook, &key, ASKED, "", 0);
        }
        self.asks.push(hook.call(key, outcome));
        Said::Waiting(format!(
            "waiting for webhook {} ({}) to answer",
            hook.name,
            hook.kind.as_str()
        ))
    }

    /// A no (or no answer): told once, then held or rolled back by the webhook's policy.
    fn refused(&mut self, plan: &Plan, hook: &HookPlan, detail: &str, reply: Reply) -> Said {
        let reason = format!(
            "webhook {} ({}) {}: {detail}",
            hook.name,
            hook.kind.as_str(),
            said(reply.as_str())
        );
        if hook.kind == WebhookKind::PostRollout {
            self.event(true, Reason::WebhookFailed, reason);
            return Said::Yes;
        }
        if hook.on_failure == FailurePolicy::Rollback {
            return Said::No(reason);
        }
        let again = after(self.now, plan.interval);
        self.event(
            true,
            Reason::WebhookHolds,
            format!("{reason}; the canary holds, asked again at {}", ts(again)),
        );
        self.wake_at(again);
        Said::Waiting(format!("{reason}; asked again at {}", ts(again)))
    }

    fn record_of(&self, hook: &str, revision: &str, step: u32) -> Option<&WebhookRecord> {
        self.status
            .webhooks
            .iter()
            .find(|r| r.name == hook && r.revision == revision && r.step == step)
    }

    /// Records a webhook's call or answer: one record per webhook, its latest.
    fn record(&mut self, hook: &HookPlan, key: &HookKey, answer: &str, detail: &str, attempts: u32) {
        let record = WebhookRecord {
            name: hook.name.clone(),
            kind: hook.kind,
            revision: key.revision.clone(),
            step: key.step,
            round: key.round,
            answer: answer.to_string(),
            detail: detail.to_string(),
            attempts,
            at: ts(self.now),
        };
        self.status.webhooks.retain(|r| r.name != hook.name);
        self.status.webhooks.push(record);
    }

    /// `weir promote` is a person's yes: the confirmations of the step it passes are
    /// recorded as said, so status shows who let the canary go on.
    pub(super) fn confirmed_by_request(&mut self, plan: &Plan, revision: &str, index: usize) {
        let Some(at) = self.at() else { return };
        let kind = confirmation(gate_after(plan, &at, index));
        for hook in plan.hooks_of(kind) {
            let key = HookKey {
                hook: hook.name.clone(),
                revision: revision.to_string(),
                step: index as u32 + 1,
                round: 0,
            };
            self.record(hook, &key, Reply::Yes.as_str(), "yes by request (weir promote)", 0);
        }
    }

    /// The rollback webhooks, asked once per `analysis.interval` of the step: the reason
    /// to roll back when one says yes. Their noes are recorded only when the answer
    /// changes, so a quiet step writes nothing.
    pub(super) fn rollback_requested(&mut self, plan: &Plan, at: &CanaryAt, started: Timestamp) -> Option<String> {
        let interval = plan.interval.max(Duration::from_secs(1));
        let round = (until(started, self.now).as_secs() / interval.as_secs()) as u32;
        for hook in plan.hooks_of(WebhookKind::Rollback) {
            self.wake_at(after(started, interval * (round + 1)));
            let key = HookKey {
                hook: hook.name.clone(),
                revision: at.canary.clone(),
                step: at.step + 1,
                round,
            };
            let Some(answer) = self.seen.answers.iter().find(|a| a.key == key).cloned() else {
                self.asks.push(hook.call(key, None));
                continue;
            };
            let last = self.record_of(&hook.name, &at.canary, at.step + 1);
            if last.is_none_or(|r| r.answer != answer.reply.as_str()) {
                self.record(hook, &key, answer.reply.as_str(), &answer.detail, answer.attempts);
            }
            if answer.reply == Reply::Yes {
                return Some(format!(
                    "webhook {} (rollback) asked for it: {}",
                    hook.name, answer.detail
                ));
            }
        }
        None
    }

    /// After a release ended: the post-rollout webhooks hear how, once each.
    pub(super) fn after_release(&mut self, plan: &Plan) {
        let Some(last) = self.status.history.first().cloned() else {
            return;
        };
        for hook in plan.hooks_of(WebhookKind::PostRollout) {
            self.ask(plan, hook, &last.revision, last.step, last.outcome.as_deref());
        }
    }
}

/// The confirmation that lets a passed step go on through `gate`.
pub(super) fn confirmation(gate: Gate) -> WebhookKind {
    match gate {
        Gate::Promote => WebhookKind::ConfirmPromotion,
        _ => WebhookKind::ConfirmStep,
    }
}

/// A refusal in words, from its recorded answer.
fn said(answer: &str) -> &'static str {
    match answer {
        "NoAnswer" => "did not answer",
        _ => "said no",
    }
}

fn on_hold(hook: &HookPlan, record: &WebhookRecord, again: Timestamp) -> String {
    let said = said(&record.answer);
    format!(
        "webhook {} ({}) {said}: {}; asked again at {}",
        hook.name,
        hook.kind.as_str(),
        record.detail,
        ts(again)
    )
}
