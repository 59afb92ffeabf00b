//! A compact, immutable list of strings: the `groups` claim as a session keeps it.
//!
//! Every cached session holds its user's groups for as long as it is cached, and a user in 20
//! groups made a `Vec<String>` the largest part of a cached session: 21 allocations, each
//! rounded up by the allocator, plus 24 bytes of header per name. A [`StrList`] keeps the
//! names in one `Box<str>`, each after its length: one allocation whatever the count (a session
//! in 20 groups went from ~840 bytes for them to 384, then 256 with the names and their end
//! offsets in two exact blocks, then 160 with the lengths inline; `cargo bench --bench
//! memory`). It reads, compares and serializes as the list of names it is (a JSON array in
//! stored records, unchanged).
//!
//! A length is written in ASCII, so the text stays valid UTF-8 and every slice of it is
//! checked by `str` itself (no `unsafe`): six bits per byte, low bits first, bit 6 set on every
//! byte but the last. A name shorter than 64 bytes costs one byte more; any length fits.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrList {
    /// Each name after its length (see the module doc). Length-prefixed, so two lists are
    /// equal exactly when their texts are.
    packed: Box<str>,
}

/// Bit 6: more length bytes follow.
const MORE: u8 = 0x40;
const LOW6: usize = 0x3F;

fn push_len(out: &mut String, mut len: usize) {
    while len > LOW6 {
        out.push(char::from(MORE | (len & LOW6) as u8));
        len >>= 6;
    }
    out.push(char::from(len as u8));
}

/// The length at the start of `s` and the bytes it took; `None` past the end.
fn read_len(s: &[u8]) -> Option<(usize, usize)> {
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

impl StrList {
    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        let mut rest = &*self.packed;
        std::iter::from_fn(move || {
            let (len, at) = read_len(rest.as_bytes())?;
            // Written by `from_iter`: always in bounds and on character boundaries; `get`
            // ends the list rather than panic if that were ever not so.
            let name = rest.get(at..at.checked_add(len)?)?;
            rest = &rest[at + len..];
            Some(name)
        })
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for StrList {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut packed = String::new();
        for n in names {
            push_len(&mut packed, n.as_ref().len());
            packed.push_str(n.as_ref());
        }
        // Copied into an exactly sized block, not shrunk in place: an allocator may keep a
        // shrunk block where it is (mimalloc does down to half its size), and a cached
        // session holds this for its lifetime.
        Self {
            packed: Box::from(packed.as_str()),
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
    fn the_text_is_the_names_and_one_byte_each_below_64() {
        let l: StrList = ["team-00", "team-01"].into_iter().collect();
        assert_eq!(l.packed.len(), 16);
        // Lengths are ASCII: a length byte never looks like part of a multi-byte character.
        let l: StrList = ["\u{7f}", "ü"].into_iter().collect();
        assert_eq!(l.iter().collect::<Vec<_>>(), ["\u{7f}", "ü"]);
        assert_eq!(&*l.packed, "\u{1}\u{7f}\u{2}ü");
        // 64 and more take two bytes: 100 = 36 + 1 * 64, so 0x40 | 36, then 1.
        let hundred = "y".repeat(100);
        let l: StrList = [hundred.as_str()].into_iter().collect();
        assert_eq!(&l.packed.as_bytes()[..2], [0x40 | 36, 1]);
    }

    proptest::proptest! {
        /// Any list of names, however odd (empty, control characters, anything Unicode, long),
        /// reads back as given, serializes as the JSON array of them, and compares equal
        /// exactly when the names do.
        #[test]
        fn any_names_read_back_and_compare_as_lists(
            a in proptest::collection::vec(".{0,80}|\\PC{0,3}|x{60,70}", 0..8),
            b in proptest::collection::vec(".{0,4}", 0..4),
        ) {
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
