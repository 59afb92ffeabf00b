//! A compact, immutable list of strings: the `groups` claim as a session keeps it.
//!
//! Every cached session holds its user's groups for as long as it is cached, and a user in 20
//! groups made a `Vec<String>` the largest part of a cached session: 21 allocations, each
//! rounded up by the allocator, plus 24 bytes of header per name. A [`StrList`] keeps the
//! names end to end in one `Box<str>` and their end offsets in one slice: two allocations
//! whatever the count (measured with `cargo bench --bench memory`: a session in 20 groups
//! went from ~840 to ~400 bytes for them). It reads, compares and serializes as the list
//! of names it is (a JSON array in stored records, unchanged).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrList {
    /// The names, end to end.
    text: Box<str>,
    /// Where each name ends in `text`.
    ends: Box<[u32]>,
}

impl StrList {
    /// The names, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let name = &self.text[start..end as usize];
            start = end as usize;
            name
        })
    }
}

impl<S: AsRef<str>> FromIterator<S> for StrList {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let (mut text, mut ends) = (String::new(), Vec::new());
        for n in names {
            // Claims come from responses bounded to a few MiB: offsets never near 4 GiB (and
            // deserializing refuses more rather than come here).
            let Ok(end) = u32::try_from(text.len() + n.as_ref().len()) else {
                break;
            };
            text.push_str(n.as_ref());
            ends.push(end);
        }
        // Copied into exactly sized blocks, not shrunk in place: an allocator may keep a
        // shrunk block where it is (mimalloc does down to half its size), and a cached session
        // holds these for its lifetime (20 groups: 256 + 128 bytes of blocks for 140 + 80).
        Self {
            text: Box::from(text.as_str()),
            ends: Box::from(ends.as_slice()),
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
        let names = Vec::<String>::deserialize(d)?;
        // `from_iter` would keep only the names that fit: refuse instead, so no name is
        // silently lost (a deny rule on a dropped group would not match).
        if names.iter().map(String::len).sum::<usize>() > u32::MAX as usize {
            return Err(serde::de::Error::custom("names longer than 4 GiB in all"));
        }
        Ok(names.into_iter().collect())
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
        assert_eq!(l.iter().len(), 5);
        assert_eq!(l.iter().collect::<Vec<_>>(), names);
        assert!(has("") && has("é,ü") && !has("admin"));
        assert_eq!(format!("{l:?}"), format!("{names:?}"));
        let empty = StrList::default();
        assert!(empty.iter().len() == 0 && empty.iter().next().is_none());
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
}
