//! Leader election: a standby takes over from a killed leader, a leader that cannot renew
//! fences itself.

use super::*;

#[test]
pub(crate) fn a_standby_takes_over_when_the_leader_is_killed() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        // weir as its ServiceAccount with config/'s RBAC: the Lease's Role is enough.
        let bed = Bed::start_with(11, "", Identity::ServiceAccount).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = standby_takes_over(&bed, &env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-ha".to_string()]).await;
    });
}

pub(crate) async fn standby_takes_over(bed: &Bed, env: &Env, f: &Failures) -> Result<(), String> {
    const LEASE: Duration = Duration::from_secs(6);
    let replica = |name: &str| replica(bed, name, LEASE);
    bed.controller.lock().unwrap().kill();
    let (mut first, mut second) = (replica("weir-a"), replica("weir-b"));
    first.start().map_err(|e| format!("start weir-a: {e}"))?;
    wait_ready(&first.port).await;
    second.start().map_err(|e| format!("start weir-b: {e}"))?;
    let start = Instant::now();
    while http_text(&second.port, "/readyz").await.is_empty() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns = "e2e-ha";
    let s = Scenario::start(env, f, ns, &env.provider).await?;
    check(
        f,
        http_text(&first.port, "/readyz").await == "leader",
        "weir-a does not lead".into(),
    );
    let standby = http_text(&second.port, "/readyz").await;
    check(
        f,
        standby.starts_with("standby"),
        format!("weir-b /readyz: {standby:?}"),
    );
    let metrics = http_text(&second.port, "/metrics").await;
    check(
        f,
        metrics.contains("weir_leader 0"),
        "weir-b's weir_leader is not 0".into(),
    );
    check(
        f,
        lease_holder(&env.client).await.as_deref() == Some("weir-a"),
        "the Lease is not weir-a's".into(),
    );
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    first.kill();
    let killed = Instant::now();
    while http_text(&second.port, "/readyz").await != "leader" {
        if killed.elapsed() > LEASE * 3 {
            return Err(format!("weir-b did not take over within {:?}", LEASE * 3));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!(
        "takeover: the standby led {} ms after the leader's SIGKILL (Lease {LEASE:?})",
        took.as_millis()
    );
    check(
        f,
        took <= LEASE + Duration::from_secs(4),
        format!("takeover took {took:?}"),
    );
    check(
        f,
        lease_holder(&env.client).await.as_deref() == Some("weir-b"),
        "the Lease is not weir-b's after the takeover".into(),
    );
    expect_promoted(env, f, ns, "after the takeover").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = s.weights_now();
    check(f, w == vec![0, 10, 25, 50, 100, 0], format!("{ns}: weights went {w:?}"));
    s.expect_no_request_met_no_pods();
    check(
        f,
        http_text(&second.port, "/metrics").await.contains("weir_leader 1"),
        "weir-b's weir_leader is not 1".into(),
    );
    second.kill();
    Ok(())
}

#[test]
pub(crate) fn a_leader_that_cannot_renew_fences_itself() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start_with(23, "", Identity::ServiceAccount).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = leader_fences_itself(&bed, &env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-fence".to_string()]).await;
    });
}

/// weir-a's renewals of the Lease fail (an admission policy refuses every update of the
/// Lease that keeps weir-a its holder; everything else of weir-a's still works) while a
/// release runs. weir-a stops before its Lease can expire — before weir-b takes it, so
/// no write of weir-a can follow weir-b's first — and weir-b finishes the release with
/// no step repeated or skipped.
pub(crate) async fn leader_fences_itself(bed: &Bed, env: &Env, f: &Failures) -> Result<(), String> {
    const LEASE: Duration = Duration::from_secs(6);
    bed.controller.lock().unwrap().kill();
    let (mut first, mut second) = (replica(bed, "weir-a", LEASE), replica(bed, "weir-b", LEASE));
    first.start().map_err(|e| format!("start weir-a: {e}"))?;
    wait_ready(&first.port).await;
    second.start().map_err(|e| format!("start weir-b: {e}"))?;
    let ns = "e2e-fence";
    let s = Scenario::start(env, f, ns, &env.provider).await?;
    check(
        f,
        lease_holder(&env.client).await.as_deref() == Some("weir-a"),
        "the Lease is not weir-a's".into(),
    );
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    devcluster::apply_yaml(&env.client, RENEWALS_OF_WEIR_A_FAIL)
        .await
        .map_err(|e| format!("admission policy: {e}"))?;
    let cut = Instant::now();
    let running = |c: &mut Controller| c.process.as_mut().is_some_and(|p| p.running());
    while running(&mut first) {
        if cut.elapsed() > LEASE * 3 {
            return Err(format!(
                "weir-a still runs {:?} after its renewals began to fail",
                LEASE * 3
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Instant::now();
    let log = first.process.as_ref().map(|p| p.tail()).unwrap_or_default();
    check(
        f,
        log.contains("past the renew deadline"),
        format!("weir-a did not say it fenced itself: {log}"),
    );
    while lease_holder(&env.client).await.as_deref() != Some("weir-b") {
        if cut.elapsed() > LEASE * 4 {
            return Err(format!("weir-b did not take the Lease within {:?}", LEASE * 4));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = Instant::now();
    eprintln!(
        "fence: weir-a stopped {} ms after its renewals began to fail, {} ms before weir-b took the Lease (Lease {LEASE:?})",
        stopped.duration_since(cut).as_millis(),
        taken.duration_since(stopped).as_millis()
    );
    check(f, stopped < taken, "weir-a ran on after weir-b took the Lease".into());
    expect_promoted(env, f, ns, "after the fenced leader stopped").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = s.weights_now();
    check(f, w == vec![0, 10, 25, 50, 100, 0], format!("{ns}: weights went {w:?}"));
    s.expect_no_request_met_no_pods();
    second.kill();
    Ok(())
}

/// Every update of weir's Lease by which weir-a stays its holder (a renewal) is refused;
/// a takeover by another replica is not.
pub(crate) const RENEWALS_OF_WEIR_A_FAIL: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: weir-a-cannot-renew}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [coordination.k8s.io]
        apiVersions: [v1]
        operations: [UPDATE]
        resources: [leases]
  validations:
    - expression: >-
        !(object.metadata.name == 'weir-leader'
          && has(object.spec.holderIdentity) && object.spec.holderIdentity == 'weir-a'
          && has(oldObject.spec.holderIdentity) && oldObject.spec.holderIdentity == 'weir-a')
      message: "test: weir-a's renewals of the Lease fail"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: weir-a-cannot-renew}
spec:
  policyName: weir-a-cannot-renew
  validationActions: [Deny]
"#;
