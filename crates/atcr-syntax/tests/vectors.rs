//! The official syntax vectors (`syntax/*.txt`), valid, invalid and parse-invalid.

use atcr_syntax::*;
use atcr_testkit::{check_lists, read_lines};

fn lists(name: &str, check: impl Fn(&str) -> bool) {
    let n = check_lists(
        &format!("syntax/{name}_syntax_valid.txt"),
        &format!("syntax/{name}_syntax_invalid.txt"),
        check,
    );
    assert!(n > 0);
}

#[test]
fn did() {
    lists("did", |s| Did::new(s).is_ok());
}

#[test]
fn handle() {
    lists("handle", |s| Handle::new(s).is_ok());
}

#[test]
fn nsid() {
    lists("nsid", |s| Nsid::new(s).is_ok());
}

#[test]
fn record_key() {
    lists("recordkey", |s| RecordKey::new(s).is_ok());
}

#[test]
fn tid() {
    lists("tid", |s| Tid::new(s).is_ok());
}

#[test]
fn at_identifier() {
    lists("atidentifier", |s| s.parse::<AtIdentifier>().is_ok());
}

#[test]
fn at_uri() {
    lists("aturi", |s| AtUri::parse(s).is_ok());
}

#[test]
fn cid_string() {
    lists("cid", |s| validate_cid_string(s).is_ok());
}

#[test]
fn uri() {
    lists("uri", |s| validate_uri(s).is_ok());
}

#[test]
fn datetime_syntax_and_parse() {
    lists("datetime", |s| validate_datetime_syntax(s).is_ok());
    // Every syntactically valid vector also parses strictly.
    lists("datetime", |s| Datetime::parse(s).is_ok());
    let parse_invalid = read_lines("syntax/datetime_parse_invalid.txt");
    assert!(!parse_invalid.is_empty());
    for s in parse_invalid {
        assert!(
            validate_datetime_syntax(&s).is_ok(),
            "{s:?} should pass the syntax check"
        );
        assert!(
            Datetime::parse(&s).is_err(),
            "{s:?} should fail the strict parse"
        );
    }
}

#[test]
fn language_syntax_and_parse() {
    lists("language", |s| validate_language_syntax(s).is_ok());
    lists("language", |s| Language::parse(s).is_ok());
    let parse_invalid = read_lines("syntax/language_parse_invalid.txt");
    assert!(!parse_invalid.is_empty());
    for s in parse_invalid {
        assert!(
            validate_language_syntax(&s).is_ok(),
            "{s:?} should pass the syntax check"
        );
        assert!(
            Language::parse(&s).is_err(),
            "{s:?} should fail the strict parse"
        );
    }
}
