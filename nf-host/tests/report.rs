//! `nf report` and `nf plan --svg`: the HTML of three real runs (neuroflux, bp, ll on the
//! bundled data) renders in headless Chromium with no console errors and a non-blank page, every
//! SVG parses; reports of earlier versions (fields missing) still draw and say what is absent;
//! bad input is one line `error: ...` with exit code 2.
//!
//! The browser check is `scripts/check_report_in_browser.py` (Debian's chromium and
//! chromium-driver, which `scripts/test.sh` installs). Without them the test is skipped with a
//! message, except under `NF_REQUIRE_TOOLS=1` (set by `scripts/test.sh`), where it fails.
mod cli_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cli_common::{assert_one_line_error, nf, nf_ok, s, tmp};
use serde_json::Value;

/// Train a small run of `mode` on the bundled data into `dir`.
fn train(dir: &Path, mode: &str) {
    nf_ok(&[
        "train",
        "--mode",
        mode,
        "--epochs",
        "2",
        "--limit",
        "600",
        "--threads",
        "2",
        "--out",
        s(dir),
    ]);
}

/// The three runs, trained once per test process.
fn runs() -> &'static [PathBuf; 3] {
    static RUNS: std::sync::OnceLock<[PathBuf; 3]> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        let root = tmp("report", "runs");
        let dirs = ["neuroflux", "bp", "ll"].map(|m| root.join(m));
        for (d, m) in dirs.iter().zip(["neuroflux", "bp", "ll"]) {
            train(d, m);
        }
        dirs
    })
}

fn require_tools() -> bool {
    std::env::var_os("NF_REQUIRE_TOOLS").is_some_and(|v| v == "1")
}

/// The `<svg>...</svg>` elements of `html`.
fn svgs(html: &str) -> Vec<&str> {
    html.match_indices("<svg")
        .map(|(i, _)| {
            let end = html[i..].find("</svg>").expect("closed svg") + i + "</svg>".len();
            &html[i..end]
        })
        .collect()
}

#[test]
fn a_comparison_report_renders_in_a_browser() {
    let [nfx, bp, ll] = runs();
    let out = tmp("report", "html");
    fs::create_dir_all(&out).unwrap();
    let html_path = out.join("report.html");
    // The inference chart comes with an eval.json in a run directory.
    let eval = nf_ok(&["eval", "--model", s(nfx), "--threads", "2", "--json"]);
    fs::write(nfx.join("eval.json"), eval).unwrap();
    let stdout = nf_ok(&["report", s(nfx), s(bp), s(ll), "--out", s(&html_path)]);
    // 4 comparison charts, then 4 per run.
    assert!(stdout.contains("(3 runs, 16 charts)"), "{stdout}");
    assert!(!stdout.contains("some fields"), "{stdout}");
    let html = fs::read_to_string(&html_path).unwrap();
    assert_eq!(svgs(&html).len(), 16);
    for bad in ["width=\"-", "height=\"-", "NaN", "inf\""] {
        assert!(!html.contains(bad), "an SVG holds {bad}");
    }
    // Self-contained: nothing fetched, no script (the SVG namespace is a name, not a fetch).
    let fetchable = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for bad in [
        "<script", "src=", "href=", "url(", "http://", "https://", "<link",
    ] {
        assert!(!fetchable.contains(bad), "the report holds {bad}");
    }
    for title in [
        "Early exit: test accuracy against parameters",
        "Inference: test accuracy against images/s",
        "Planned total and peak RSS of each run",
        "Training accuracy against training time",
        "neuroflux: arena of each block under --budget",
        "bp: training loss per epoch",
        "ll: training accuracy (%) per epoch",
        "neuroflux: training images/s per block",
    ] {
        assert!(html.contains(title), "no chart {title:?}");
    }
    // The trade-off chart marks each run's chosen exit; the summary shows every run.
    let exit_unit = |d: &Path| cli_common::report(d)["exit"]["unit"].as_u64().unwrap();
    for d in [nfx, bp, ll] {
        assert!(html.contains(&format!("exit: unit {}", exit_unit(d))));
    }
    assert!(!html.contains("Absent from this report.json"));

    let plan_svg = out.join("plan.svg");
    nf_ok(&[
        "plan",
        "--model",
        "vgg11",
        "--budget",
        "256MiB",
        "--svg",
        s(&plan_svg),
    ]);
    let plan = fs::read_to_string(&plan_svg).unwrap();
    assert!(plan.starts_with("<svg") && plan.contains("--budget 256.0 MiB"));

    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_report_in_browser.py");
    let have = |tool: &str| Path::new("/usr/bin").join(tool).exists();
    if !(have("chromium") && have("chromedriver")) {
        assert!(
            !require_tools(),
            "NF_REQUIRE_TOOLS=1 (scripts/test.sh): the browser check must run, but chromium or \
             chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped the browser check: chromium or chromedriver is missing");
        return;
    }
    let o = Command::new("python3")
        .arg(&script)
        .args([
            s(&html_path),
            s(&out),
            s(&plan_svg),
            "--expect-charts",
            "16",
        ])
        .output()
        .expect("run python3");
    assert!(
        o.status.success(),
        "browser check failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The check fails where it should: a console error, a blank page, an SVG that is no XML.
    let bad = out.join("bad.html");
    fs::write(
        &bad,
        "<!DOCTYPE html><html><body><svg width=\"10\" height=\"10\"><rect></svg>\
         <script>console.error(\"boom\")</script></body></html>",
    )
    .unwrap();
    let o = Command::new("python3")
        .arg(&script)
        .args([s(&bad), s(&out)])
        .output()
        .expect("run python3");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for needle in [
        "console SEVERE",
        "boom",
        "looks blank",
        "does not parse",
        "no figure",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // The screenshots, for a look (the README's chart was taken from first-chart.png).
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    fs::create_dir_all(&keep).unwrap();
    for f in ["page.png", "first-chart.png"] {
        fs::copy(out.join(f), keep.join(f)).unwrap();
    }
    eprintln!("screenshots in {}", keep.display());
}

/// Remove the field at `path` (dot-separated; `[]` applies to every element of a list).
fn strip(v: &mut Value, path: &str) {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    if let Some(list) = head.strip_suffix("[]") {
        if let Some(Value::Array(items)) = v.get_mut(list) {
            for item in items {
                strip(item, rest);
            }
        }
    } else if rest.is_empty() {
        v.as_object_mut().unwrap().remove(head);
    } else if let Some(inner) = v.get_mut(head) {
        strip(inner, rest);
    }
}

#[test]
fn reports_of_earlier_versions_draw_and_say_what_is_absent() {
    let [nfx, ..] = runs();
    let dir = tmp("report", "old");
    fs::create_dir_all(&dir).unwrap();
    let mut v = cli_common::report(nfx);
    // What report.json lacked before the memory contract and per-unit parameters.
    for field in [
        "memory",
        "peak_rss_bytes",
        "planned_total_bytes",
        "heads[].params",
        "plan.blocks[].breakdown.recompute",
        "blocks[].epochs[].seconds",
    ] {
        strip(&mut v, field);
    }
    fs::write(dir.join("report.json"), v.to_string()).unwrap();
    let html_path = dir.join("old.html");
    let stdout = nf_ok(&["report", s(&dir), "--out", s(&html_path)]);
    assert!(stdout.contains("(1 run, 7 charts)"), "{stdout}");
    assert!(
        stdout.contains("1 of the report.json files lacks some fields"),
        "{stdout}"
    );
    let html = fs::read_to_string(&html_path).unwrap();
    let absent = html
        .split("Absent from this report.json")
        .nth(1)
        .expect("the absent fields are named");
    let absent = &absent[..absent.find("</p>").unwrap()];
    for name in [
        "memory.budget_used_bytes",
        "peak_rss_bytes",
        "planned_total_bytes",
        "heads[].params",
        "plan.blocks[].breakdown.recompute",
        "blocks[].epochs[].seconds",
    ] {
        assert!(absent.contains(name), "{name} not named in: {absent}");
    }
    // The trade-off still shows the exit and the last unit (their parameters are known).
    assert!(html.contains("exit: unit"));

    // A report.json written by an earlier nf (fixtures/README.md): exactly its gaps are named.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/reports/before-memory-contract.json");
    let stdout = nf_ok(&["report", s(&fixture), "--out", s(&html_path)]);
    assert!(stdout.contains("(1 run, 7 charts)"), "{stdout}");
    let html = fs::read_to_string(&html_path).unwrap();
    let absent = html
        .split("earlier version of nf, or edited): ")
        .nth(1)
        .unwrap();
    assert_eq!(
        &absent[..absent.find(". The charts").unwrap()],
        "plan.blocks[].breakdown.recompute, heads[].params, memory.budget_used_bytes, \
         memory.data_bytes, memory.cache_bytes, memory.model_bytes, planned_total_bytes, \
         peak_rss_bytes"
    );

    // An eval.json that is not `nf eval --json`'s output is named, not fatal.
    fs::write(dir.join("eval.json"), "[]").unwrap();
    nf_ok(&["report", s(&dir), "--out", s(&html_path)]);
    assert!(fs::read_to_string(&html_path)
        .unwrap()
        .contains("eval.json (not the output of `nf eval --json`)"));

    // A report.json of another program: an empty object draws empty charts, named absent.
    fs::write(dir.join("report.json"), "{}").unwrap();
    let stdout = nf_ok(&[
        "report",
        s(&dir.join("report.json")),
        "--out",
        s(&html_path),
    ]);
    assert!(stdout.contains("(1 run, 7 charts)"), "{stdout}");
    assert!(fs::read_to_string(&html_path).unwrap().contains("no data"));
}

#[test]
fn bad_input_is_one_line_errors() {
    let dir = tmp("report", "bad");
    fs::create_dir_all(dir.join("empty")).unwrap();
    let out = dir.join("out.html");
    let o = nf(&["report", s(&dir.join("nope")), "--out", s(&out)]);
    assert_one_line_error(&o, "nope");
    let o = nf(&["report", s(&dir.join("empty")), "--out", s(&out)]);
    assert_one_line_error(&o, "no report.json in this directory");
    for (name, text, needle) in [
        ("notjson.json", "{\"mode\": ", "is not JSON"),
        ("list.json", "[1, 2]", "not a JSON object"),
        ("binary.json", "\u{0}\u{1}\u{2}", "is not JSON"),
    ] {
        fs::write(dir.join(name), text).unwrap();
        let o = nf(&["report", s(&dir.join(name)), "--out", s(&out)]);
        assert_one_line_error(&o, needle);
        assert!(String::from_utf8_lossy(&o.stderr).contains(name));
    }
    // A huge file is refused from its size, before it is read.
    let huge = dir.join("huge.json");
    fs::File::create(&huge).unwrap().set_len(65 << 20).unwrap();
    assert_one_line_error(&nf(&["report", s(&huge), "--out", s(&out)]), "too large");
    // Too many runs; an --out that cannot be written.
    fs::write(dir.join("r.json"), "{}").unwrap();
    let r = dir.join("r.json");
    let many: Vec<&str> = std::iter::once("report")
        .chain(std::iter::repeat_n(s(&r), 17))
        .collect();
    assert_one_line_error(&nf(&many), "at most 16");
    let o = nf(&["report", s(&r), "--out", s(&dir.join("no/such/dir/x.html"))]);
    assert_one_line_error(&o, "--out");
    let o = nf(&["plan", "--svg", s(&dir.join("no/such/dir/x.svg"))]);
    assert_one_line_error(&o, "--svg");
    assert!(!out.exists(), "nothing written on error");
    // Run labels that XML cannot hold are made printable.
    let odd = dir.join("odd\u{1}name");
    fs::create_dir_all(&odd).unwrap();
    fs::write(odd.join("report.json"), "{}").unwrap();
    nf_ok(&["report", s(&odd), s(&odd), "--out", s(&out)]);
    let html = fs::read_to_string(&out).unwrap();
    assert!(html.contains("odd?name (2)") && !html.contains('\u{1}'));
}
