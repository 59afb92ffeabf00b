//! A compact, immutable list of strings: the `groups` claim as a session keeps it.
//!
//! Every cached session holds its user's groups for as long as it is cached, and a user in 20
//! groups made a `Vec<String>` the largest part of a cached session: 21 allocations, each
//! rounded up by the allocator, plus 24 bytes of header per name. A [`StrList`] keeps the
//! names in one shared block of text (a session in 20 groups went from ~840 bytes for them to
//! 384, then 256, then 160; now a 192-byte block that is also the groups header's value, which
//! was a second 159-byte copy: see below; `cargo bench --bench memory`). It
//! reads, compares and serializes as the list of names it is (a JSON array in stored records,
//! unchanged).
//!
//! Two spellings, chosen by the names, so each list has exactly one:
//! - **joined**: when every name is non-empty and has no comma, the names joined with `,`.
//!   That is what the groups identity header sends, so the header's value can be this very
//!   block ([`StrList::joined`]) instead of a second copy of the text.
//! - **packed**: otherwise, `,` then each name after its length. A joined text never starts
//!   with a comma, so the first byte tells them apart. A length is written in ASCII, so the
//!   text stays valid UTF-8 and every slice of it is checked by `str` itself (no `unsafe`): six
//!   bits per byte, low bits first, bit 6 set on every byte but the last.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrList {
    /// The names in one of the two spellings (see the module doc); `None` for no names.
    /// One spelling per list, so two lists are equal exactly when their texts are.
    text: Option<Arc<str>>,
}

/// Bit 6: more length bytes follow.
const MORE: u8 = 0x40;
const LOW6: usize = 0x3F;
/// Starts a packed text.
const PACKED: char = ',';

pub(crate) fn push_len(out: &mut String, mut len: usize) {
    while len > LOW6 {
        out.push(char::from(MORE | (len & LOW6) as u8));
        len >>= 6;
    }
    out.push(char::from(len as u8));
}

/// The length at the start of `s` and the bytes it took; `None` past the end.
pub(crate) fn read_len(s: &[u8]) -> Option<(usize, usize)> {
    let (mut len, mut shift) = (0usize, 0u32);
    for (i, &b) in s.iter().enumerate() {
        len |= usize::from(b & LOW6 as u8).checked_shl(shift)?;
        if b & MORE == 0 {
            return Some((len, i + 1));
        }
        shift += 6;
    }
    None
}

/// The names of a [`StrList`], in order.
#[derive(Clone)]
pub struct Names<'a> {
    rest: Option<&'a str>,
    joined: bool,
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        if self.joined {
            let (name, tail) = rest
                .split_once(',')
                .map_or((rest, None), |(n, t)| (n, Some(t)));
            self.rest = tail;
            return Some(name);
        }
        let Some((len, at)) = read_len(rest.as_bytes()) else {
            self.rest = None;
            return None;
        };
        // Written by `from_iter`: always in bounds and on character boundaries; `get` ends
        // the list rather than panic if that were ever not so.
        let end = at.checked_add(len)?;
        let name = rest.get(at..end)?;
        self.rest = rest.get(end..);
        Some(name)
    }
}

impl StrList {
    /// The names, in order.
    pub fn iter(&self) -> Names<'_> {
        match self.text.as_deref() {
            None => Names {
                rest: None,
                joined: false,
            },
            Some(t) => match t.strip_prefix(PACKED) {
                Some(packed) => Names {
                    rest: Some(packed),
                    joined: false,
                },
                None => Names {
                    rest: Some(t),
                    joined: true,
                },
            },
        }
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_none()
    }

    /// The names joined with `,`, as shared text, when that spelling holds them (each name
    /// non-empty and without a comma): a header value can own it instead of a copy.
    pub(crate) fn joined(&self) -> Option<Joined> {
        self.text
            .as_ref()
            .filter(|t| !t.starts_with(PACKED))
            .map(|t| Joined(Arc::clone(t)))
    }
}

/// [`StrList::joined`]: the text, as `bytes::Bytes::from_owner` takes it.
pub(crate) struct Joined(Arc<str>);

impl AsRef<[u8]> for Joined {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Joined {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: AsRef<str>> FromIterator<S> for StrList {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let names: Vec<S> = names.into_iter().collect();
        if names.is_empty() {
            return Self::default();
        }
        let joinable = names
            .iter()
            .all(|n| !n.as_ref().is_empty() && !n.as_ref().contains(','));
        let mut text = String::new();
        if joinable {
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(n.as_ref());
            }
        } else {
            text.push(PACKED);
            for n in &names {
                push_len(&mut text, n.as_ref().len());
                text.push_str(n.as_ref());
            }
        }
        Self {
            text: Some(Arc::from(text.as_str())),
        }
    }
}

impl fmt::Debug for StrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for StrList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any length fits, so no name is ever left out (a deny rule on a dropped group would
        // not match).
        Ok(Vec::<String>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_was_given() {
        let names = ["admins", "", "dev ops", "é,ü", "admins"];
        let l: StrList = names.iter().collect();
        let has = |n: &str| l.iter().any(|x| x == n);
        assert_eq!(l.len(), 5);
        assert_eq!(l.iter().collect::<Vec<_>>(), names);
        assert!(has("") && has("é,ü") && !has("admin"));
        assert_eq!(format!("{l:?}"), format!("{names:?}"));
        let empty = StrList::default();
        assert!(empty.is_empty() && empty.iter().next().is_none());
        let one_empty: StrList = [""].into_iter().collect();
        assert!(
            !one_empty.is_empty() && one_empty.len() == 1,
            "[\"\"] is not []"
        );
        assert_eq!(StrList::from_iter([""; 0]), empty);
    }

    #[test]
    fn serializes_as_a_json_array() {
        let l: StrList = ["a", "b\"c", "日本"].into_iter().collect();
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"["a","b\"c","日本"]"#);
        assert_eq!(serde_json::from_str::<StrList>(&json).unwrap(), l);
        assert_eq!(
            serde_json::from_str::<StrList>("[]").unwrap(),
            StrList::default()
        );
        // Whatever is not a list of strings is refused, as `Vec<String>` refused it.
        for bad in [r#""a""#, "[1]", "null", r#"{"a":1}"#] {
            assert!(serde_json::from_str::<StrList>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn equal_lists_are_equal_however_built() {
        let a: StrList = ["ab", "c"].into_iter().collect();
        let b: StrList = vec!["ab".to_string(), "c".to_string()]
            .into_iter()
            .collect();
        let c: StrList = ["a", "bc"].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, c, "same text, other names");
    }

    #[test]
    fn every_length_reads_back_across_the_length_byte_boundaries() {
        for len in [
            0, 1, 62, 63, 64, 65, 127, 128, 4095, 4096, 4097, 262_143, 262_144,
        ] {
            let long = "x".repeat(len);
            let names = ["a", long.as_str(), "é", long.as_str(), ""];
            let l: StrList = names.iter().collect();
            assert_eq!(l.iter().collect::<Vec<_>>(), names, "length {len}");
            assert_eq!(l.len(), 5);
        }
    }

    #[test]
    fn each_list_has_one_spelling_and_the_joined_one_is_the_header_text() {
        let text = |l: &StrList| l.text.as_deref().map(str::to_string);
        // Joined: every name non-empty and without a comma.
        let l: StrList = ["team-00", "team-01"].into_iter().collect();
        assert_eq!(text(&l).as_deref(), Some("team-00,team-01"));
        assert_eq!(l.joined().unwrap().as_str(), "team-00,team-01");
        let one: StrList = ["x"].into_iter().collect();
        assert_eq!((text(&one).as_deref(), one.len()), (Some("x"), 1));
        // Packed: a comma, then each name after its length. Lengths are ASCII: a length byte
        // never looks like part of a multi-byte character.
        let l: StrList = ["\u{7f}", "ü", ""].into_iter().collect();
        assert_eq!(l.iter().collect::<Vec<_>>(), ["\u{7f}", "ü", ""]);
        assert_eq!(text(&l).as_deref(), Some(",\u{1}\u{7f}\u{2}ü\u{0}"));
        assert!(l.joined().is_none());
        for names in [
            &["a,b", "c"][..],
            &[","],
            &[""],
            &["a", ""],
            &["", "a"],
            &[",a"],
        ] {
            let l: StrList = names.iter().collect();
            assert!(text(&l).unwrap().starts_with(','), "{names:?}");
            assert!(l.joined().is_none(), "{names:?}");
            assert_eq!(l.iter().collect::<Vec<_>>(), names);
        }
        // 64 and more take two bytes: 100 = 36 + 1 * 64, so 0x40 | 36, then 1.
        let hundred = "y".repeat(100);
        let l: StrList = [hundred.as_str(), ""].into_iter().collect();
        assert_eq!(&text(&l).unwrap().as_bytes()[1..3], [0x40 | 36, 1]);
        // No names, no block.
        assert!(StrList::from_iter([""; 0]).text.is_none());
    }

    proptest::proptest! {
        /// Any list of names, however odd (empty, control characters, anything Unicode, long),
        /// reads back as given, serializes as the JSON array of them, and compares equal
        /// exactly when the names do.
        #[test]
        fn any_names_read_back_and_compare_as_lists(
            a in proptest::collection::vec(".{0,80}|\\PC{0,3}|x{60,70}", 0..8),
            b in proptest::collection::vec(".{0,4}", 0..4),
            c in proptest::collection::vec("[a,]{0,3}", 0..5),
            d in proptest::collection::vec("[a,]{0,3}", 0..5),
        ) {
            // Either spelling, and lists that differ only in spelling, compare as lists.
            let (lc, ld): (StrList, StrList) = (c.iter().collect(), d.iter().collect());
            proptest::prop_assert_eq!(lc.iter().collect::<Vec<_>>(), c.iter().map(String::as_str).collect::<Vec<_>>());
            proptest::prop_assert_eq!(ld.iter().collect::<Vec<_>>(), d.iter().map(String::as_str).collect::<Vec<_>>());
            proptest::prop_assert_eq!(lc == ld, c == d);
            proptest::prop_assert_eq!(lc.joined().map(|j| j.as_str().to_string()), (!c.is_empty() && c.iter().all(|n| !n.is_empty() && !n.contains(','))).then(|| c.join(",")));
            let la: StrList = a.iter().collect();
            let lb: StrList = b.iter().collect();
            proptest::prop_assert_eq!(la.iter().collect::<Vec<_>>(), a.iter().map(String::as_str).collect::<Vec<_>>());
            proptest::prop_assert_eq!(la.len(), a.len());
            proptest::prop_assert_eq!(la == lb, a == b);
            let json = serde_json::to_string(&la).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&a).unwrap());
            proptest::prop_assert_eq!(serde_json::from_str::<StrList>(&json).unwrap(), la);
        }
    }
}
