//! The kit's reporting scenario: a Verifier reports what it applied, so that
//! GetRevocationConfirmations names its account as having dropped a revoked key.

use zsc::proto::GetRevocationConfirmationsRequest;

use super::line::VerifierCommand;
use super::*;
use crate::confirmations::{confirmations, confirmed_by, until_answer};

#[tokio::test]
async fn kit_the_verifier_reports_the_revocations_it_applied() {
    for command in verifiers() {
        reports_what_it_applied(&command).await;
    }
}

async fn reports_what_it_applied(command: &VerifierCommand) {
    let kit = Kit::start().await;
    let mut verifier = kit.verifier(command).await;
    cached(&mut verifier, &kit.admin, &kit.key).await;
    let (ms, _) =
        rejection_after(&mut verifier, &kit.admin, &kit.key, kit.regenerate().await).await;
    let mut console = confirmations(&kit.server, &kit.server.operator_token).await;
    let request = GetRevocationConfirmationsRequest {
        sequence: 1,
        key_id: String::new(),
    };
    let what = format!("{} confirmed by desk", verifier.name);
    let answer = until_answer(&mut console, request, &what, |a| {
        confirmed_by(a, "desk").is_some()
    })
    .await;
    let lag = answer.confirmed[0].lag.expect("a lag");
    println!(
        "kit: {}: rejected {ms:.1} ms after RegenerateKey was acknowledged; confirmed {:.1} ms after the revocation",
        verifier.name,
        lag.seconds as f64 * 1e3 + f64::from(lag.nanos) / 1e6
    );
    verifier.quit().await;
}
