//! Unit tests of the parent module.

use super::worker::parse_entry;
use super::*;

#[test]
fn entries_parse_from_data_or_fields() {
    let ok = parse_entry(&[("data".into(), r#"{"type":"x"}"#.into())]).expect("object");
    assert_eq!(ok["type"], "x");
    assert!(parse_entry(&[("data".into(), "not json".into())]).is_err());
    assert!(parse_entry(&[("data".into(), "[1]".into())]).is_err());
    let fields = parse_entry(&[
        ("type".into(), "escalation".into()),
        ("n".into(), "1".into()),
    ])
    .expect("fields");
    assert_eq!(fields["type"], "escalation");
    let mut b = Backoff::default();
    let delays: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
    assert_eq!(delays[0], 100);
    assert_eq!(*delays.last().unwrap_or(&0), 5000);
}
