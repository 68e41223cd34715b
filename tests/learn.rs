//! `fullsend learn append` and `fullsend worklist set`: concurrent appends stay
//! intact; tactical learnings never collide; replacement is atomic.

use crate::support::{World, read};

#[test]
fn eight_processes_times_one_hundred_appends_keep_all_800() {
    let w = World::bare();
    let handles: Vec<_> = (0..8)
        .map(|p| {
            let mut cmd = w.cmd(&["learn", "append"]);
            let script = (0..100)
                .map(|i| format!("learning-{p}-{i}"))
                .collect::<Vec<_>>();
            std::thread::spawn(move || {
                for text in script {
                    let out = cmd_with_arg(&mut cmd, &text);
                    assert!(out, "append failed");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let text = read(&w.context().join("learnings.md"));
    assert_eq!(text.matches("\n## ").count(), 800);
    for p in 0..8 {
        for i in 0..100 {
            assert_eq!(
                text.matches(&format!("\nlearning-{p}-{i}\n")).count()
                    + usize::from(text.ends_with(&format!("\nlearning-{p}-{i}"))),
                1,
                "learning-{p}-{i}"
            );
        }
    }
    assert_eq!(text.matches("# Strategic Learnings").count(), 1);
}

fn cmd_with_arg(template: &mut std::process::Command, text: &str) -> bool {
    let mut c = std::process::Command::new(template.get_program());
    c.env_clear();
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.args(template.get_args())
        .arg(text)
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn the_same_id_appends_once_and_empty_text_is_refused() {
    let w = World::bare();
    assert_eq!(
        w.run(&["learn", "append", "--id", "m1", "CTOs respond"], "")
            .code,
        0
    );
    let second = w.run(&["learn", "append", "--id", "m1", "CTOs respond"], "");
    assert_eq!(second.json()["appended"], false);
    assert_eq!(
        read(&w.context().join("learnings.md"))
            .matches("CTOs respond")
            .count(),
        1
    );
    assert_eq!(w.run(&["learn", "append"], "   \n").code, 2);
    assert_eq!(w.run(&["learn", "append", "--id", "../x", "t"], "").code, 2);
    let piped = w.run(&["learn", "append"], "from stdin\n");
    assert_eq!(piped.code, 0);
    assert!(read(&w.context().join("learnings.md")).ends_with("\nfrom stdin"));
}

#[test]
fn tactical_learnings_get_unique_keys_and_an_index() {
    let w = World::with_redis();
    for i in 0..5 {
        let r = w.run(
            &[
                "learn",
                "append",
                "--tactical",
                "--experiment",
                "exp_20240115_x",
                &format!("tactic {i}"),
            ],
            "",
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let mut c = w.conn();
    let keys: Vec<String> = redis::cmd("ZRANGE")
        .arg("learnings:tactical:index")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("zrange");
    assert_eq!(keys.len(), 5, "same-second writes never collide");
    let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query(&mut c)
        .expect("hgetall");
    assert_eq!(h["experiment_id"], "exp_20240115_x");
    assert_eq!(h["source"], "fullsend");
    assert!(h["text"].starts_with("tactic"));
    assert_eq!(
        w.run(
            &[
                "learn",
                "append",
                "--tactical",
                "--experiment",
                "../../etc",
                "x"
            ],
            ""
        )
        .code,
        2
    );
}

#[test]
fn worklist_set_replaces_and_refuses_empty() {
    let w = World::bare();
    assert_eq!(w.run(&["worklist", "set"], "# One\n").code, 0);
    let r = w.run(&["worklist", "set"], "# Two\n");
    assert_eq!(r.code, 0);
    assert!(r.json()["previous"].is_string());
    assert_eq!(read(&w.context().join("worklist.md")), "# Two\n");
    assert_eq!(w.run(&["worklist", "set"], "").code, 2);
    assert_eq!(read(&w.context().join("worklist.md")), "# Two\n");
}
