//! Unit tests of the parent module.

use serde_json::Value;
use serde_json::json;

use super::extract::extract;
use super::normalize::normalize;
use super::validate::{valid_experiment_id, validate, validate_tool_request, violation};
use super::*;

/// The example spec from the FULLSEND PRD ("Experiment Spec Format"), verbatim.
const PRD_SPEC: &str = r#"experiment:
  id: exp_20240115_github_stars
  hypothesis: "CTOs who starred competitor repos are high-intent prospects"
  created_at: "2024-01-15T10:30:00Z"
  state: draft  # draft | ready | running | completed | failed | archived

  target:
    description: "CTOs and technical founders who starred competitor/product repo"
    size: 500
    source: "GitHub API via github_stargazer_scraper tool"
    filters:
      - has_email: true
      - has_company: true
      - title_contains: ["CTO", "Founder", "CEO", "VP Eng"]

  execution:
    tool: github_stargazer_scraper
    params:
      repo: "competitor/product"
      limit: 500
    schedule: "0 9 * * MON"  # Every Monday 9am
    timezone: "America/Los_Angeles"

  outreach:
    channel: email
    sender: "jake@company.com"
    subject: "Quick question about {{company}}"
    template: |
      Hi {{first_name}},

      Noticed you starred {{repo}} - looks like you're exploring dev tools.

      We built something similar but focused on {{value_prop}}.
      Would love to get your take on it.

      15 min this week?

      Jake

  metrics:
    - name: emails_sent
      type: counter
    - name: emails_opened
      type: counter
    - name: open_rate
      type: percentage
      formula: "emails_opened / emails_sent"
    - name: replies
      type: counter
    - name: response_rate
      type: percentage
      formula: "replies / emails_sent"
      success_threshold: 0.10
    - name: meetings_booked
      type: counter

  success_criteria:
    - response_rate > 0.10
    - meetings_booked >= 3

  failure_criteria:
    - response_rate < 0.02 after 100 sends
    - unsubscribe_rate > 0.05
    - bounce_rate > 0.10
"#;

/// The example tool request from the PRD ("Tool Request Format"), shortened.
const PRD_TOOL_REQUEST: &str = r#"tool_request:
  id: req_20240115_001
  name: github_stargazer_scraper
  description: "Scrape users who starred a GitHub repo, extracting profile info"
  priority: high
  requested_by: fullsend
  experiment_blocked: exp_20240115_github_stars
  inputs:
    - name: repo
      type: string
      description: "owner/repo format"
      required: true
  requirements:
    - Must handle GitHub API rate limiting (5000 req/hr with token)
"#;

fn prd_spec() -> Object {
    let extracted = extract(PRD_SPEC).unwrap();
    let mut spec = extracted.experiment;
    normalize(&mut spec);
    spec
}

/// Applies `change` to the PRD spec, normalises, validates and returns the rule names hit.
fn rules_after(change: impl FnOnce(&mut Value)) -> (Vec<&'static str>, Vec<Violation>) {
    let mut value = Value::Object(prd_spec());
    change(&mut value);
    let Value::Object(mut spec) = value else {
        panic!("spec must stay a mapping")
    };
    normalize(&mut spec);
    let violations = validate(&spec);
    let mut rules: Vec<&'static str> = violations.iter().map(|v| v.rule).collect();
    rules.dedup();
    (rules, violations)
}

fn obj(value: Value) -> Object {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn prd_example_is_valid() {
    let spec = prd_spec();
    assert_eq!(validate(&spec), Vec::<Violation>::new());
    assert_eq!(spec["execution"]["schedule"], json!("0 9 * * MON"));
    assert_eq!(spec["state"], json!("draft"));
    assert_eq!(spec["created_at"], json!("2024-01-15T10:30:00Z"));
}

#[test]
fn id_rule() {
    let (rules, violations) = rules_after(|s| s["id"] = json!("exp_20241301_bad_month"));
    assert_eq!(rules, vec!["id"]);
    assert_eq!(violations[0].field, "id");
    let (rules, _) = rules_after(|s| {
        s.as_object_mut().map(|m| m.remove("id"));
    });
    assert_eq!(rules, vec!["id"]);
    let (rules, _) = rules_after(|s| s["id"] = json!(20240115));
    assert_eq!(rules, vec!["id"]);
}

#[test]
fn experiment_ids() {
    for good in [
        "exp_20240115_github_stars",
        "exp_20240229_leap",
        "exp_20991231_a",
        "exp_20240115_v2_test_",
    ] {
        assert!(valid_experiment_id(good), "{good}");
    }
    let too_long = format!("exp_20240115_{}", "a".repeat(52));
    assert_eq!(too_long.len(), 65);
    let max = format!("exp_20240115_{}", "a".repeat(51));
    assert!(valid_experiment_id(&max));
    for bad in [
        "",
        "exp_",
        "../x",
        "exp_20240115_../x",
        "exp_20240115_a/b",
        "exp_20240115_has space",
        "exp_20240115_line\n",
        "exp_20240115_cr\r",
        "exp_20240115_{id}",
        "exp_20240115_ｆｕｌｌ",
        "exp_２０２４0115_full",
        "exp_1.yaml",
        "exp_20240115_x.yaml",
        "exp_20240115_Upper",
        "exp_20240115_1abc",
        "exp_20240115_",
        "exp_2024011_short",
        "exp_20230229_not_leap",
        "exp_20240132_day",
        "exp_20241301_month",
        "exp_00000101_year_zero",
        "EXP_20240115_x",
        " exp_20240115_x",
        "exp-20240115-x",
        too_long.as_str(),
    ] {
        assert!(!valid_experiment_id(bad), "{bad:?} should be rejected");
    }
}

#[test]
fn hypothesis_rule() {
    let (rules, violations) = rules_after(|s| s["hypothesis"] = json!("too short"));
    assert_eq!(rules, vec!["hypothesis"]);
    assert!(violations[0].message.contains("got 9"));
    let (rules, _) = rules_after(|s| s["hypothesis"] = json!("x".repeat(501)));
    assert_eq!(rules, vec!["hypothesis"]);
    let (rules, _) = rules_after(|s| s["hypothesis"] = json!(format!("   {}   ", "é".repeat(20))));
    assert!(
        rules.is_empty(),
        "20 characters (not bytes), trimmed, is enough: {rules:?}"
    );
    let (rules, _) = rules_after(|s| s["hypothesis"] = json!(["a list"]));
    assert_eq!(rules, vec!["hypothesis"]);
}

#[test]
fn target_size_rule() {
    let (rules, _) = rules_after(|s| s["target"]["size"] = json!(0));
    assert_eq!(rules, vec!["target.size"]);
    let (rules, _) = rules_after(|s| s["target"]["size"] = json!(-5));
    assert_eq!(rules, vec!["target.size"]);
    let (rules, _) = rules_after(|s| s["target"]["size"] = json!(10));
    assert_eq!(rules, vec!["target.size"], "email needs 50-5000");
    let (rules, _) = rules_after(|s| s["target"]["size"] = json!(6000));
    assert_eq!(rules, vec!["target.size"]);
    let (rules, _) = rules_after(|s| s["target"]["size"] = json!("lots"));
    assert_eq!(rules, vec!["target.size"]);
    let (rules, _) = rules_after(|s| s["target"]["size"] = json!(12.5));
    assert_eq!(rules, vec!["target.size"]);
    let (rules, _) = rules_after(|s| {
        s["target"]["size"] = json!(500);
        s["outreach"]["channel"] = json!("linkedin");
    });
    assert_eq!(rules, vec!["target.size"], "linkedin needs 20-200");
    let (rules, _) = rules_after(|s| {
        s["target"]["size"] = json!(150);
        s["outreach"]["channel"] = json!("LinkedIn");
    });
    assert!(rules.is_empty(), "{rules:?}");
    let (rules, _) = rules_after(|s| {
        s["target"]["size"] = json!(100_000);
        s["outreach"]["channel"] = json!("twitter");
    });
    assert!(rules.is_empty(), "twitter has no size bounds: {rules:?}");
    let (rules, violations) = rules_after(|s| s["target"]["description"] = json!("  "));
    assert_eq!(rules, vec!["target.size"]);
    assert_eq!(violations[0].field, "target.description");
    let (rules, _) = rules_after(|s| s["target"] = json!(["not", "a", "map"]));
    assert_eq!(rules, vec!["target.size"]);
}

#[test]
fn numeric_string_sizes_are_normalised() {
    for (raw, expected) in [
        (json!("500"), 500),
        (json!(" 1,000 "), 1000),
        (json!(500.0), 500),
    ] {
        let mut spec = prd_spec();
        if let Some(t) = spec.get_mut("target") {
            t["size"] = raw.clone();
        }
        normalize(&mut spec);
        assert_eq!(spec["target"]["size"], json!(expected), "{raw}");
        assert!(validate(&spec).is_empty());
    }
}

#[test]
fn placeholders_rule() {
    let (rules, violations) = rules_after(|s| {
        s["outreach"]["template"] = json!("Hi {{FIRST_NAME}}, we help {{company}}.")
    });
    assert_eq!(rules, vec!["placeholders"]);
    assert_eq!(violations[0].field, "outreach.template");
    assert!(
        violations[0].message.contains("{{FIRST_NAME}}"),
        "{}",
        violations[0].message
    );
    assert!(!violations[0].message.contains("company"));

    for bad in [
        "Hi [INSERT NAME], great to meet you.",
        "Hi [insert name here], great to meet you.",
        "Hi there, [PLACEHOLDER] is what we do.",
        "Hi there, [COMPANY NAME] is great.",
        "Hi there, [Your Name]",
        "Hi there, <insert pitch>",
        "Hi there, Lorem ipsum dolor sit amet.",
        "Hi there, pricing is TBD.",
        "Hi {{ PLACEHOLDER }}",
        "Hi {{}}",
    ] {
        let (rules, _) = rules_after(|s| s["outreach"]["template"] = json!(bad));
        assert_eq!(rules, vec!["placeholders"], "{bad}");
    }
    let marker = concat!("TO", "DO");
    let (rules, _) =
        rules_after(|s| s["outreach"]["subject"] = json!(format!("{marker}: subject")));
    assert_eq!(rules, vec!["placeholders"]);
    let (rules, _) = rules_after(|s| {
        s["hypothesis"] = json!("CTOs at [INSERT SEGMENT] respond to stargazer outreach")
    });
    assert_eq!(rules, vec!["placeholders"]);

    for fine in [
        "Hi {{first_name}}, saw {{company}} on {{ repo }}. [NEW] launch. todo lists are hard. TBDs",
        "Hi {{firstName}}, no placeholders here, 100% real copy.",
        "Hi {{first_name}}, see [Your dashboard](https://example.com/d) for details.",
    ] {
        let (rules, _) = rules_after(|s| s["outreach"]["template"] = json!(fine));
        assert!(rules.is_empty(), "{fine}: {rules:?}");
    }
}

#[test]
fn template_and_channel_are_required() {
    let (rules, violations) = rules_after(|s| {
        s["outreach"].as_object_mut().map(|o| o.remove("template"));
    });
    assert_eq!(rules, vec!["placeholders"]);
    assert_eq!(violations[0].field, "outreach.template");
    let (rules, violations) = rules_after(|s| s["outreach"]["channel"] = json!("carrier_pigeon"));
    // Also no size bounds apply to an unknown channel, so only one rule fires.
    assert_eq!(rules, vec!["placeholders"]);
    assert_eq!(violations[0].field, "outreach.channel");
    let (rules, _) = rules_after(|s| s["outreach"] = json!("email"));
    assert_eq!(rules, vec!["placeholders"]);
}

#[test]
fn metrics_rule() {
    let (rules, violations) = rules_after(|s| {
        s["metrics"] = json!([{"name": "open_rate", "type": "percentage"}]);
    });
    assert_eq!(rules, vec!["metrics"]);
    assert!(violations[0].message.contains("_sent"));
    let (rules, violations) = rules_after(|s| {
        s["metrics"] = json!([{"name": "emails_sent", "type": "counter"}]);
    });
    assert_eq!(rules, vec!["metrics"]);
    assert!(violations[0].message.contains("_rate"));
    let (rules, violations) = rules_after(|s| s["metrics"][0]["type"] = json!("gauge"));
    assert_eq!(rules, vec!["metrics"]);
    assert_eq!(violations[0].field, "metrics[0].type");
    let (rules, _) = rules_after(|s| s["metrics"] = json!([]));
    assert_eq!(rules, vec!["metrics"]);
    let (rules, _) = rules_after(|s| s["metrics"] = json!("emails_sent, open_rate"));
    assert_eq!(rules, vec!["metrics"]);
    let (rules, _) = rules_after(|s| s["metrics"] = json!([1, null, [2]]));
    assert_eq!(rules, vec!["metrics"]);
}

#[test]
fn metrics_map_is_normalised_to_a_list() {
    let (rules, _) = rules_after(|s| {
        s["metrics"] = json!({
            "emails_sent": {"type": "Counter"},
            "response_rate": "percentage",
        });
    });
    assert!(rules.is_empty(), "{rules:?}");
    let mut spec = prd_spec();
    spec.insert(
        "metrics".into(),
        json!({"emails_sent": {"type": "counter"}, "reply_rate": null}),
    );
    normalize(&mut spec);
    assert_eq!(
        spec["metrics"],
        json!([{"name": "emails_sent", "type": "counter"}, {"name": "reply_rate"}])
    );
}

#[test]
fn success_and_failure_criteria_rules() {
    for key in ["success_criteria", "failure_criteria"] {
        let (rules, _) = rules_after(|s| s[key] = json!([]));
        assert_eq!(rules, vec![key]);
        let (rules, _) = rules_after(|s| {
            s.as_object_mut().map(|m| m.remove(key));
        });
        assert_eq!(rules, vec![key]);
        let (rules, violations) = rules_after(|s| s[key] = json!(["ok", "  ", ["x"]]));
        assert_eq!(rules, vec![key]);
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].field, format!("{key}[1]"));
        // Prose criteria and a single string are tolerated.
        let (rules, _) = rules_after(|s| {
            s[key] = json!("We call it a win if at least 10% of CTOs reply within two weeks")
        });
        assert!(rules.is_empty(), "{rules:?}");
        // `- response_rate: "> 0.10"` reads as a one-entry mapping.
        let (rules, _) = rules_after(|s| s[key] = json!([{"response_rate": "> 0.10"}]));
        assert!(rules.is_empty(), "{rules:?}");
    }
}

#[test]
fn schedule_rule() {
    for bad in [
        "0 9 * * MON *",
        "60 9 * * *",
        "@reboot",
        "every monday",
        "0 9 * * MONDAY",
    ] {
        let (rules, violations) = rules_after(|s| s["execution"]["schedule"] = json!(bad));
        assert_eq!(rules, vec!["schedule"], "{bad}");
        assert_eq!(violations[0].field, "execution.schedule");
    }
    let (rules, _) =
        rules_after(|s| s["execution"]["schedule"] = json!("0 9 * * MON # Every Monday 9am"));
    assert!(rules.is_empty());
    let (rules, _) = rules_after(|s| s["execution"]["timezone"] = json!("Mars/Olympus"));
    assert_eq!(rules, vec!["schedule"]);
    let (rules, _) = rules_after(|s| s["execution"]["tool"] = json!(""));
    assert_eq!(rules, vec!["schedule"]);
    let (rules, violations) = rules_after(|s| {
        s["execution"] = json!({"tool": "x", "phases": [{"schedule": "0 9 * * *"}]});
    });
    assert_eq!(rules, vec!["schedule"]);
    assert!(violations[0].message.contains("phases"));
    let (rules, _) = rules_after(|s| s["execution"] = json!("weekly"));
    assert_eq!(rules, vec!["schedule"]);
}

#[test]
fn normalize_fills_defaults_and_flattens_schedule() {
    let mut spec = obj(json!({
        "execution": {"tool": "t", "schedule": {"cron": "0 9 * * MON # weekly", "timezone": "Europe/Paris"}},
        "outreach": {"channel": " Email "},
        "target": {"size": "500"},
        "created_at": "2024-01-15T10:30:00Z",
    }));
    normalize(&mut spec);
    assert_eq!(spec["state"], json!("draft"));
    assert_eq!(spec["execution"]["schedule"], json!("0 9 * * MON"));
    assert_eq!(spec["execution"]["timezone"], json!("Europe/Paris"));
    assert_eq!(spec["outreach"]["channel"], json!("email"));
    assert_eq!(spec["created_at"], json!("2024-01-15T10:30:00Z"));

    assert_eq!(spec["target"]["size"], json!(500));

    let mut spec = obj(json!({"execution": {"timezone": " america/los_angeles "}}));
    normalize(&mut spec);
    assert_eq!(spec["execution"]["timezone"], json!("America/Los_Angeles"));
    let mut spec = obj(json!({"execution": {"timezone": "Mars/Olympus"}}));
    normalize(&mut spec);
    assert_eq!(spec["execution"]["timezone"], json!("Mars/Olympus"));

    let mut spec = obj(json!({"state": "running", "execution": {"schedule": "@daily"}}));
    normalize(&mut spec);
    assert_eq!(spec["state"], json!("running"));
    assert_eq!(spec["execution"]["timezone"], json!("UTC"));
    assert!(!spec.contains_key("created_at"));
}

#[test]
fn never_panics_on_odd_shapes() {
    let shapes = [
        json!({}),
        json!({"id": null, "hypothesis": null, "target": null, "execution": null, "outreach": null,
                   "metrics": null, "success_criteria": null, "failure_criteria": null}),
        json!({"id": [], "hypothesis": {}, "target": "x", "execution": [], "outreach": 5,
                   "metrics": {"a": [1]}, "success_criteria": {}, "failure_criteria": 0, "state": []}),
        json!({"target": {"size": [1]}, "execution": {"schedule": 5, "timezone": [], "tool": {}},
                   "outreach": {"template": ["x"], "channel": 1, "subject": null}, "metrics": [[], "x", {"name": 1}]}),
        json!({"target": {"size": "-3"}, "execution": {"schedule": {"x": 1}}, "metrics": {"a_sent": 3}}),
        json!({"target": {"size": 1e300}, "hypothesis": "{{".repeat(300)}),
    ];
    for shape in shapes {
        let mut spec = obj(shape);
        normalize(&mut spec);
        let violations = validate(&spec);
        assert!(!violations.is_empty());
        for rule in ["id", "hypothesis", "target.size", "metrics", "schedule"] {
            assert!(
                violations.iter().any(|v| v.rule == rule),
                "{rule} missing in {violations:?}"
            );
        }
    }
}

#[test]
fn extract_from_prose_fence_and_trailing_text() {
    let text = format!(
        "I researched the audience. Here is the spec:\n\n```yaml\n{PRD_SPEC}```\n\nLet me know if you want changes!\n"
    );
    let extracted = extract(&text).unwrap();
    assert_eq!(
        extracted.experiment["id"],
        json!("exp_20240115_github_stars")
    );
    assert_eq!(extracted.tool_request, None);
}

#[test]
fn extract_second_fence_is_the_real_spec() {
    let draft = "experiment:\n  id: exp_YYYYMMDD_short_name\n  hypothesis: \"What we're testing\"\n  target:\n    size: estimated_count\n  execution:\n    tool: tool_name_to_use\n  outreach:\n    channel: email\n  metrics: []\n";
    let text =
        format!("Template:\n```yaml\n{draft}```\nFinal version:\n```yml\n{PRD_SPEC}```\nDone.");
    let extracted = extract(&text).unwrap();
    assert_eq!(
        extracted.experiment["id"],
        json!("exp_20240115_github_stars")
    );
}

#[test]
fn extract_last_complete_spec_wins_over_a_fragment() {
    let fragment = "experiment:\n  metrics:\n    - name: x_rate\n      type: percentage\n";
    let text = format!("```yaml\n{PRD_SPEC}```\nAlso tweak:\n```yaml\n{fragment}```\n");
    let extracted = extract(&text).unwrap();
    assert_eq!(
        extracted.experiment["id"],
        json!("exp_20240115_github_stars")
    );
}

#[test]
fn extract_tool_request_in_separate_fence() {
    let text = format!(
        "Spec:\n```yaml\n{PRD_SPEC}```\n\nWe also need a tool:\n\n```\n{PRD_TOOL_REQUEST}```\nThanks."
    );
    let extracted = extract(&text).unwrap();
    assert_eq!(
        extracted.experiment["id"],
        json!("exp_20240115_github_stars")
    );
    let Some(request) = extracted.tool_request else {
        panic!("tool request lost")
    };
    assert_eq!(request["name"], json!("github_stargazer_scraper"));
    assert!(validate_tool_request(&request).is_empty());
}

#[test]
fn extract_bare_yaml_with_both_roots() {
    let text = format!("{PRD_SPEC}\n{PRD_TOOL_REQUEST}");
    let extracted = extract(&text).unwrap();
    assert_eq!(extracted.experiment["target"]["size"], json!(500));
    assert!(extracted.tool_request.is_some());
    let mut spec = extracted.experiment;
    normalize(&mut spec);
    assert!(validate(&spec).is_empty());
}

#[test]
fn extract_unfenced_yaml_after_prose() {
    let text = format!(
        "Sure! Here's the design.\n\n{PRD_SPEC}\nThis should get a 10% response rate.\nCheers"
    );
    let extracted = extract(&text).unwrap();
    assert_eq!(
        extracted.experiment["id"],
        json!("exp_20240115_github_stars")
    );
    assert_eq!(
        extracted.experiment["failure_criteria"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[test]
fn extract_unfenced_with_key_like_prose_after() {
    let text = format!("{PRD_SPEC}Note: the schedule is: Mondays at 9am.\nGood luck");
    let extracted = extract(&text).unwrap();
    assert_eq!(
        extracted.experiment["id"],
        json!("exp_20240115_github_stars")
    );
}

#[test]
fn yaml_error_inside_the_spec_is_reported_not_cut_away() {
    // An unquoted `*/5` starts a YAML alias: the whole spec is invalid, and the message
    // must point at the schedule line of the whole output (line 4 + 19 = 23 here).
    let broken = PRD_SPEC.replace("schedule: \"0 9 * * MON\"", "schedule: */5 * * * *");
    let text = format!("Intro\n\n```yaml\n{broken}```\nThanks");
    let error = extract(&text).unwrap_err();
    assert!(error.starts_with("experiment YAML is invalid"), "{error}");
    let schedule_line = text
        .lines()
        .position(|l| l.contains("schedule: */5"))
        .unwrap()
        + 1;
    assert!(
        error.contains(&format!("at line {schedule_line} ")),
        "{error}"
    );
}

#[test]
fn placeholder_scan_is_linear_on_unmatched_delimiters() {
    let mut spec = prd_spec();
    let template = "<[{{ ".repeat(200_000);
    if let Some(o) = spec.get_mut("outreach") {
        o["template"] = json!(template);
    }
    let started = std::time::Instant::now();
    let _ = validate(&spec);
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

#[test]
fn extract_json_form() {
    let spec = prd_spec();
    let json_text = serde_json::to_string_pretty(&json!({
        "experiment": spec,
        "tool_request": {"name": "github_stargazer_scraper", "description": "Scrape stargazers"},
    }))
    .unwrap();
    let extracted = extract(&json_text).unwrap();
    assert_eq!(extracted.experiment, spec);
    assert!(extracted.tool_request.is_some());

    let in_prose = format!("The spec as JSON: {json_text} -- end");
    assert_eq!(extract(&in_prose).unwrap().experiment, spec);
    let fenced = format!("```json\n{json_text}\n```");
    assert_eq!(extract(&fenced).unwrap().experiment, spec);
}

#[test]
fn extract_crlf() {
    let text = format!(
        "Intro\r\n```yaml\r\n{}```\r\nBye\r\n",
        PRD_SPEC.replace('\n', "\r\n")
    );
    let extracted = extract(&text).unwrap();
    let mut spec = extracted.experiment;
    normalize(&mut spec);
    assert!(validate(&spec).is_empty());
    let template = spec["outreach"]["template"].as_str().unwrap();
    assert!(!template.contains('\r'));
    let bare = PRD_SPEC.replace('\n', "\r\n");
    assert_eq!(
        extract(&bare).unwrap().experiment["id"],
        json!("exp_20240115_github_stars")
    );
}

#[test]
fn extract_errors_are_clear() {
    let none = extract("I could not design anything, sorry.").unwrap_err();
    assert!(none.starts_with("no experiment found"), "{none}");
    assert!(extract("").is_err());
    let only_tool = extract(PRD_TOOL_REQUEST).unwrap_err();
    assert!(only_tool.contains("tool_request"), "{only_tool}");
    let broken =
        "Here:\n\n```yaml\nexperiment:\n  id: exp_20240115_x\n  hypothesis: [unclosed\n```\n";
    let error = extract(broken).unwrap_err();
    // The block starts at line 4 of the output; the unclosed list is on line 6.
    assert!(
        error.contains("YAML") && error.contains("at line 6 "),
        "{error}"
    );
    assert!(!error.contains("at line 3 "), "{error}");
    let not_map = extract("```yaml\nexperiment: pending\n```").unwrap_err();
    assert!(not_map.contains("not a mapping"), "{not_map}");
}

#[test]
fn extract_never_panics_on_odd_yaml() {
    for text in [
        "experiment:\n",
        "experiment: [1, 2]\n",
        "- experiment:\n    id: exp_20240115_x\n    hypothesis: h\n",
        "```yaml\n---\n---\nexperiment: {id: 1}\n...\n```",
        "```yaml\n1: 2\n? [a, b]\n: c\nexperiment:\n  !tag id: exp_20240115_x\n```",
        "```yaml\nbase: &b {tool: t}\nexperiment:\n  execution:\n    <<: *b\n```",
        "experiment:\n  size: .inf\n  id: !!str 5\n",
        "```\n```",
        "`````",
        "{{{{",
        "experiment:\n\t- bad",
    ] {
        let _ = extract(text);
    }
    let merged =
        extract("```yaml\nbase: &b {tool: t}\nexperiment:\n  execution:\n    <<: *b\n```").unwrap();
    assert_eq!(merged.experiment["execution"]["tool"], json!("t"));
    let listed = extract("- experiment:\n    id: exp_20240115_x\n").unwrap();
    assert_eq!(listed.experiment["id"], json!("exp_20240115_x"));
}

#[test]
fn tool_request_rules() {
    let good = obj(json!({"name": "github_stargazer_scraper", "description": "Scrapes"}));
    assert!(validate_tool_request(&good).is_empty());
    for name in [
        json!("GitHub Scraper"),
        json!("x"),
        json!("1tool"),
        json!("a-b"),
        json!(null),
        json!(3),
        json!(format!("a{}", "b".repeat(64))),
    ] {
        let request = obj(json!({"name": name, "description": "d"}));
        let violations = validate_tool_request(&request);
        assert_eq!(violations.len(), 1, "{name}");
        assert_eq!(violations[0].rule, "tool_request");
        assert_eq!(violations[0].field, "tool_request.name");
    }
    let violations = validate_tool_request(&obj(json!({"name": "ok_tool", "description": ""})));
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "tool_request.description");
    assert_eq!(validate_tool_request(&Object::new()).len(), 2);
}

#[test]
fn yaml_round_trip() {
    let spec = prd_spec();
    let yaml = to_yaml(&spec).unwrap();
    assert!(yaml.starts_with("experiment:\n"), "{yaml}");
    let back = extract(&yaml).unwrap();
    assert_eq!(back.experiment, spec);
}

#[test]
fn violations_serialize() {
    let violation = violation("id", "id", "id is missing");
    assert_eq!(
        serde_json::to_value(&violation).unwrap(),
        json!({"rule": "id", "field": "id", "message": "id is missing"})
    );
}
