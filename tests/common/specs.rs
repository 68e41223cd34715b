//! The PRD's example experiment spec, for tests that need a model or agent to answer a valid one.

#![allow(dead_code, unreachable_pub)]

/// The PRD's example spec as YAML, valid once its id is.
pub fn spec_yaml(id: &str) -> String {
    format!(
        r#"experiment:
  id: {id}
  hypothesis: "CTOs who starred competitor repos are high-intent prospects"
  target:
    description: "CTOs and technical founders who starred competitor/product repo"
    size: 500
    source: "GitHub API via github_stargazer_scraper tool"
  execution:
    tool: github_stargazer_scraper
    params:
      repo: "competitor/product"
      limit: 500
    schedule: "0 9 * * MON  # Every Monday 9am"
    timezone: "America/Los_Angeles"
  outreach:
    channel: email
    sender: "jake@company.com"
    subject: "Quick question about {{{{company}}}}"
    template: |
      Hi {{{{first_name}}}},

      Noticed you starred {{{{repo}}}} - looks like you're exploring dev tools.
      We built something similar but focused on onboarding speed.

      15 min this week?

      Jake
  metrics:
    - name: emails_sent
      type: counter
    - name: replies
      type: counter
    - name: response_rate
      type: percentage
      formula: "replies / emails_sent"
      success_threshold: 0.10
  success_criteria:
    - response_rate > 0.10
  failure_criteria:
    - response_rate < 0.02 after 100 sends
"#
    )
}
