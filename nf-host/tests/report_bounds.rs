//! `nf report` is bounded in memory and output by construction: the largest report.json the
//! 64 MiB cap admits, of four shapes (a million epochs; a million heads; 190,000 units each its
//! own block and planned block; one block of 530,000 units), rendered by 16 `nf report`
//! processes at once, each under an address-space limit (`ulimit -v`, so a process needing
//! more fails to allocate and the render fails): every render succeeds, each page is below
//! [`HTML_BOUND`] and says what it decimated. No time is asserted (README "Seeing a run" gives
//! the measured times).
mod cli_common;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cli_common::{s, tmp};

/// The input cap of `nf report` (`MAX_REPORT_BYTES`).
const CAP: usize = 64 << 20;

/// The largest page allowed for one run (measured: 70 to 230 KB).
const HTML_BOUND: u64 = 1 << 20;

/// The address space each `nf report` may use, in KiB (measured: the largest inputs need
/// 250 to 300 MB of address space, at most 219 MiB peak RSS; before the bounds, 1.3 GiB).
const ADDRESS_SPACE_KIB: u64 = 512 * 1024;

/// A training accuracy in [0.1, 0.99] that wanders, with a spike every 997 values.
fn acc(i: usize) -> f64 {
    let spike = if i.is_multiple_of(997) { 0.09 } else { 0.0 };
    0.5 + 0.4 * (i as f64 / 1000.0).sin() + spike
}

/// A report.json of `sections` lists, as large as the cap admits (less 4 KiB): element `i` of
/// every list is `items(i)[k]` (k: the list), the lists put in place by `page`; with the count
/// of elements per list (`page` is given it too).
fn largest(
    sections: usize,
    items: impl Fn(usize) -> Vec<String>,
    page: impl Fn(&[String], usize) -> String,
) -> (String, usize) {
    let room = CAP - 4096 - page(&vec![String::new(); sections], 0).len();
    let mut lists = vec![String::new(); sections];
    let (mut size, mut n) = (0, 0);
    loop {
        let next = items(n);
        let add: usize = next.iter().map(|s| s.len() + 1).sum();
        if size + add > room {
            break;
        }
        for (l, s) in lists.iter_mut().zip(next) {
            if !l.is_empty() {
                l.push(',');
            }
            l.push_str(&s);
        }
        size += add;
        n += 1;
    }
    let text = page(&lists, n);
    assert!(
        text.len() <= CAP && text.len() > CAP - (1 << 20),
        "{}",
        text.len()
    );
    (text, n)
}

const HEAD: &str = r#"{"mode":"neuroflux","model":"vgg-small","budget_bytes":33554432,"epochs_per_block":1,"full_params":241898,"test_acc":0.9,"seconds_total":12.5,"exit":{"unit":1,"test_acc":0.5,"params":1000},"#;

/// The four shapes: (name, report.json, what the page must say it decimated or left out).
fn inputs() -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    // (a) One block of one unit trained for a million epochs.
    let (text, n) = largest(
        1,
        |i| {
            vec![format!(
                r#"{{"loss":[{:.6}],"train_acc":[{:.6}],"seconds":0.01}}"#,
                2.0 - acc(i),
                acc(i)
            )]
        },
        |l, _| {
            format!(
                r#"{HEAD}"heads":[{{"unit":0,"test_acc":0.5,"params":1000}}],"blocks":[{{"units":[0,0],"batch_size":64,"images_per_sec":100.0,"epochs":[{}]}}]}}"#,
                l[0]
            )
        },
    );
    assert!(n > 1_000_000, "{n} epochs");
    out.push(("epochs", text, format!("unit 0 ({} points)", thousands(n))));
    // (b) A million heads.
    let (text, n) = largest(
        1,
        |i| {
            vec![format!(
                r#"{{"unit":{i},"test_acc":{:.6},"params":{}}}"#,
                acc(i),
                1000 + i
            )]
        },
        |l, _| format!(r#"{HEAD}"heads":[{}]}}"#, l[0]),
    );
    assert!(n > 1_000_000, "{n} heads");
    out.push(("heads", text, format!("({} points)", thousands(n))));
    // (c) Every unit its own head, trained block and planned block.
    let (text, n) = largest(
        3,
        |i| {
            vec![
                format!(
                    r#"{{"unit":{i},"test_acc":{:.6},"params":{}}}"#,
                    acc(i),
                    1000 + i
                ),
                format!(
                    r#"{{"units":[{i},{i}],"batch_size":64,"images_per_sec":{}.5,"epochs":[{{"loss":[{:.6}],"train_acc":[{:.6}],"seconds":0.5}}]}}"#,
                    100 + i % 50,
                    2.0 - acc(i),
                    acc(i)
                ),
                format!(
                    r#"{{"units":[{i},{i}],"batch_size":64,"breakdown":{{"params":{},"grads":1,"optimizer":2,"bn_state":3,"io":4,"activations":5,"act_grads":6,"workspace":7,"recompute":8}}}}"#,
                    1000 + i
                ),
            ]
        },
        |l, _| {
            format!(
                r#"{HEAD}"heads":[{}],"blocks":[{}],"plan":{{"blocks":[{}]}}}}"#,
                l[0], l[1], l[2]
            )
        },
    );
    assert!(n > 150_000, "{n} units");
    out.push((
        "units",
        text,
        format!("{} blocks: each bar is the largest of", thousands(n)),
    ));
    // (d) One block of half a million units, 4 epochs, a loss and accuracy per unit.
    let (text, n) = largest(
        9,
        |i| {
            let mut v: Vec<String> = (0..4)
                .flat_map(|e| {
                    [
                        format!("{:.6}", 1.0 + acc(i + e)),
                        format!("{:.6}", acc(i + e)),
                    ]
                })
                .collect();
            v.push(format!(
                r#"{{"unit":{i},"test_acc":{:.6},"params":{}}}"#,
                acc(i),
                1000 + i
            ));
            v
        },
        |l, n| {
            let mut epochs = String::new();
            for e in 0..4 {
                let _ = write!(
                    epochs,
                    r#"{}{{"loss":[{}],"train_acc":[{}],"seconds":1.0}}"#,
                    if e > 0 { "," } else { "" },
                    l[2 * e],
                    l[2 * e + 1]
                );
            }
            let last = n.saturating_sub(1);
            format!(
                r#"{HEAD}"heads":[{}],"blocks":[{{"units":[0,{last}],"batch_size":64,"images_per_sec":100.0,"epochs":[{epochs}]}}]}}"#,
                l[8]
            )
        },
    );
    assert!(n > 400_000, "{n} units");
    out.push((
        "wide",
        text,
        format!("{} units: the lines of 16 of them", thousands(n)),
    ));
    out
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Start `nf report INPUT --out HTML` under an address-space limit of `kib` KiB.
fn spawn_limited(input: &Path, html: &Path, kib: u64) -> Child {
    Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -v {kib} && exec \"$0\" report \"$1\" --out \"$2\""),
            env!("CARGO_BIN_EXE_nf"),
            s(input),
            s(html),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sh")
}

#[test]
fn the_largest_reports_render_16_at_once_within_bounds() {
    let dir = tmp("report_bounds", "inputs");
    fs::create_dir_all(&dir).unwrap();
    let files: Vec<(PathBuf, String)> = inputs()
        .into_iter()
        .map(|(name, text, note)| {
            let f = dir.join(format!("{name}.json"));
            fs::write(&f, text).unwrap();
            (f, note)
        })
        .collect();

    // The limit holds: the largest input cannot render in 64 MiB of address space.
    let html = dir.join("small.html");
    let o = spawn_limited(&files[0].0, &html, 64 * 1024)
        .wait_with_output()
        .unwrap();
    assert!(
        !o.status.success(),
        "rendered under 64 MiB: is `ulimit -v` ignored?"
    );
    assert!(!html.exists());

    // 16 at once, 4 of each shape.
    let children: Vec<(Child, PathBuf, &str)> = (0..16)
        .map(|k| {
            let (input, note) = &files[k % files.len()];
            let html = dir.join(format!("report-{k}.html"));
            (
                spawn_limited(input, &html, ADDRESS_SPACE_KIB),
                html,
                note.as_str(),
            )
        })
        .collect();
    // Every child waited for before any assertion (none left running on a failure).
    let done: Vec<_> = children
        .into_iter()
        .map(|(child, html, note)| (child.wait_with_output().unwrap(), html, note))
        .collect();
    for (o, html, note) in done {
        assert!(
            o.status.success(),
            "{}: {}",
            html.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let size = fs::metadata(&html).unwrap().len();
        assert!(size < HTML_BOUND, "{}: {size} bytes", html.display());
        let page = fs::read_to_string(&html).unwrap();
        assert!(page.contains(note), "{}: no note {note:?}", html.display());
        assert_eq!(page.matches("<svg").count(), 7, "{}", html.display());
    }
    let _ = fs::remove_dir_all(&dir);
}
