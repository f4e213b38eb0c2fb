use crate::SyntaxError;

/// A BCP-47 language tag, as the Lexicon `language` format accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Language(String);

const KIND: &str = "language tag";

const IRREGULAR: &[&str] = &[
    "en-GB-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-BE-FR",
    "sgn-BE-NL",
    "sgn-CH-DE",
    "art-lojban",
    "cel-gaulish",
    "no-bok",
    "no-nyn",
    "zh-guoyu",
    "zh-hakka",
    "zh-min",
    "zh-min-nan",
    "zh-xiang",
];

fn alpha(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
}
fn alnum(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The parsed parts that the strict check needs.
struct Parsed<'a> {
    variants: Vec<&'a str>,
    singletons: Vec<u8>,
}

fn parse(s: &str) -> Option<Parsed<'_>> {
    let mut parsed = Parsed {
        variants: vec![],
        singletons: vec![],
    };
    if IRREGULAR.iter().any(|g| g.eq_ignore_ascii_case(s)) {
        return Some(parsed);
    }
    let subtags: Vec<&str> = s.split('-').collect();
    let is_private = |t: &str| t.eq_ignore_ascii_case("x");
    let private_rest = |rest: &[&str]| !rest.is_empty() && rest.iter().all(|t| alnum(t, 1, 8));
    if is_private(subtags[0]) {
        return private_rest(&subtags[1..]).then_some(parsed);
    }
    let mut i = 0;
    // language: 2-3 lower-case letters, then up to three 3-letter extlangs.
    let lang = subtags[i];
    if !(2..=3).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    i += 1;
    let mut ext = 0;
    while i < subtags.len() && ext < 3 && alpha(subtags[i], 3, 3) {
        i += 1;
        ext += 1;
    }
    if i < subtags.len() && alpha(subtags[i], 4, 4) {
        i += 1; // script
    }
    if i < subtags.len()
        && (alpha(subtags[i], 2, 2)
            || (subtags[i].len() == 3 && subtags[i].bytes().all(|b| b.is_ascii_digit())))
    {
        i += 1; // region
    }
    while i < subtags.len() {
        let t = subtags[i];
        let variant =
            alnum(t, 5, 8) || (t.len() == 4 && t.as_bytes()[0].is_ascii_digit() && alnum(t, 4, 4));
        if !variant {
            break;
        }
        parsed.variants.push(t);
        i += 1;
    }
    while i < subtags.len() && subtags[i].len() == 1 && !is_private(subtags[i]) {
        let singleton = subtags[i].as_bytes()[0];
        if !singleton.is_ascii_alphanumeric() {
            return None;
        }
        parsed.singletons.push(singleton.to_ascii_lowercase());
        i += 1;
        let start = i;
        while i < subtags.len() && alnum(subtags[i], 2, 8) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i < subtags.len() && is_private(subtags[i]) {
        return private_rest(&subtags[i + 1..]).then_some(parsed);
    }
    (i == subtags.len()).then_some(parsed)
}

/// Validates language-tag syntax (the grammar only).
pub fn validate_language_syntax(s: &str) -> Result<(), SyntaxError> {
    parse(s)
        .map(|_| ())
        .ok_or(SyntaxError::new(KIND, "not a BCP-47 language tag"))
}

impl Language {
    /// Parses strictly: the grammar, and no repeated variant or extension singleton.
    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        let p = parse(s).ok_or(SyntaxError::new(KIND, "not a BCP-47 language tag"))?;
        for (k, v) in p.variants.iter().enumerate() {
            if p.variants[..k].iter().any(|w| w.eq_ignore_ascii_case(v)) {
                return Err(SyntaxError::new(KIND, "repeated variant"));
            }
        }
        for (k, c) in p.singletons.iter().enumerate() {
            if p.singletons[..k].contains(c) {
                return Err(SyntaxError::new(KIND, "repeated extension singleton"));
            }
        }
        Ok(Self(s.to_owned()))
    }
    /// The tag as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
