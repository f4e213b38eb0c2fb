use atcr_syntax::{Datetime, Tid, TidClock};
use proptest::prelude::*;

#[test]
fn clock_is_strictly_monotonic_across_threads() {
    let clock = std::sync::Arc::new(TidClock::with_clock_id(7));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = clock.clone();
            std::thread::spawn(move || (0..5000).map(|_| c.next()).collect::<Vec<_>>())
        })
        .collect();
    let mut all: Vec<Tid> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "duplicate TIDs");
}

#[test]
fn clock_never_goes_backwards_with_the_wall_clock() {
    let clock = TidClock::with_clock_id(1);
    let a = clock.next_after_micros(2_000_000);
    let b = clock.next_after_micros(1_000_000); // wall clock stepped back
    assert!(b > a);
    clock.observe(&Tid::from_parts(9_000_000, 3));
    assert!(clock.next_after_micros(1).timestamp_micros() > 9_000_000);
}

#[test]
fn datetime_canonical_format_round_trips() {
    let d = Datetime::from_unix_millis(1_700_000_000_123);
    assert_eq!(d.as_str(), "2023-11-14T22:13:20.123Z");
    assert_eq!(
        Datetime::parse(d.as_str()).unwrap().unix_millis(),
        1_700_000_000_123
    );
}

proptest! {
    #[test]
    fn tid_parts_round_trip(micros in 0u64..(1 << 53), id in 0u16..1024) {
        let t = Tid::from_parts(micros, id);
        prop_assert!(Tid::new(t.as_str()).is_ok());
        prop_assert_eq!(t.timestamp_micros(), micros);
    }

    #[test]
    fn datetime_from_millis_parses(ms in -62_000_000_000_000i64..253_402_300_799_000) {
        let d = Datetime::from_unix_millis(ms);
        prop_assert_eq!(Datetime::parse(d.as_str()).unwrap().unix_millis(), ms);
    }

    #[test]
    fn validators_never_panic(s in ".{0,300}") {
        let _ = atcr_syntax::Did::new(s.clone());
        let _ = atcr_syntax::Handle::new(s.clone());
        let _ = atcr_syntax::Nsid::new(s.clone());
        let _ = atcr_syntax::AtUri::parse(&s);
        let _ = atcr_syntax::Datetime::parse(&s);
        let _ = atcr_syntax::Language::parse(&s);
        let _ = atcr_syntax::validate_uri(&s);
    }
}
