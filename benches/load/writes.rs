//! Row 4: durable writes, RegenerateKey from 64 callers on 64 orgs vs 1 caller.

use super::*;

// Row 4: durable writes

pub(crate) async fn row4(
    options: &Options,
    fx: &Fixture,
    rows: &mut Vec<Row>,
    server: &ServerUnderTest,
) {
    let mut clients = Vec::new();
    for _ in 0..fx.orgs.len() {
        clients.push(KeyServiceClient::with_interceptor(
            connect(&fx.url).await,
            fx.operator.clone(),
        ));
    }
    let single = regenerate_call(vec![clients[0].clone()], vec![fx.orgs[0].clone()]);
    let many = regenerate_call(clients, fx.orgs.clone());
    let callers = fx.orgs.len();
    closed_loop(&single, 1, options.window / 2, server).await;
    let (mut one, mut all) = (vec![], vec![]);
    let (mut one_h, mut all_h) = (histogram(), histogram());
    for round in 0..options.rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            let w = if first {
                closed_loop(&single, 1, options.window, server).await
            } else {
                closed_loop(&many, callers, options.window, server).await
            };
            eprintln!(
                "row 4: {} caller(s) {}",
                if first { 1 } else { callers },
                rate(w.rate)
            );
            if w.errors > 0 {
                eprintln!("row 4: {} calls failed", w.errors);
            }
            let (rates, h) = if first {
                (&mut one, &mut one_h)
            } else {
                (&mut all, &mut all_h)
            };
            rates.push(w.rate);
            h.add(w.latency).expect("same bounds");
        }
    }
    let ratio = median(&all) / median(&one);
    rows.push(Row {
        row: "4",
        figure: format!(
            "RegenerateKey, {callers} callers on {callers} orgs (rate; p99 = call latency)"
        ),
        median: rate(median(&all)),
        p99: time(all_h.value_at_quantile(0.99) as f64),
        baseline: "1 caller".into(),
        baseline_median: rate(median(&one)),
        baseline_p99: time(one_h.value_at_quantile(0.99) as f64),
        ratio: format!("{ratio:.1}x"),
        target: ">= 5x".into(),
        result: verdict(ratio >= 5.0),
    });
}
