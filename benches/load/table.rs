//! The one table the suite prints.

use super::*;

// The table

pub(crate) struct Row {
    pub(crate) row: &'static str,
    pub(crate) figure: String,
    pub(crate) median: String,
    pub(crate) p99: String,
    pub(crate) baseline: String,
    pub(crate) baseline_median: String,
    pub(crate) baseline_p99: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
    pub(crate) result: String,
}

impl Row {
    pub(crate) fn not_measured(row: &'static str, figure: &str, target: &str, why: &str) -> Row {
        Row {
            row,
            figure: figure.into(),
            median: "not measured".into(),
            p99: "-".into(),
            baseline: why.into(),
            baseline_median: "-".into(),
            baseline_p99: "-".into(),
            ratio: "-".into(),
            target: target.into(),
            result: "-".into(),
        }
    }
}

pub(crate) fn verdict(pass: bool) -> String {
    if pass { "pass" } else { "MISS" }.into()
}

/// An open-loop row's result: none when most of its `windows` overloaded (the latency then
/// measures the machine's queue, not the server), else the verdict of `judged`, else
/// `unjudged` (a window at another rate or size than the target's).
pub(crate) fn open_loop_result(
    overloaded: usize,
    windows: usize,
    judged: Option<bool>,
    unjudged: &str,
) -> String {
    match judged {
        _ if overloaded * 2 > windows => "none: overloaded".into(),
        Some(pass) => verdict(pass),
        None => unjudged.into(),
    }
}

pub(crate) fn time(ns: f64) -> String {
    if ns.is_nan() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

pub(crate) fn rate(per_second: f64) -> String {
    let whole = per_second.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

pub(crate) fn print_table(rows: &[Row]) {
    let header = [
        "row", "figure", "median", "p99", "baseline", "median", "p99", "ratio", "target", "result",
    ];
    let cells: Vec<[&str; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.row,
                &r.figure,
                &r.median,
                &r.p99,
                &r.baseline,
                &r.baseline_median,
                &r.baseline_p99,
                &r.ratio,
                &r.target,
                &r.result,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str; 10]| {
        let mut out = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {cell:<w$} |");
        }
        out
    };
    println!("{}", line(&header));
    let mut rule = String::from("|");
    for w in widths {
        let _ = write!(rule, "{}|", "-".repeat(w + 2));
    }
    println!("{rule}");
    for row in &cells {
        println!("{}", line(row));
    }
}
