//! `s3://BUCKET/KEY` URIs: parsing and the rules that keep a key inside its
//! bucket once it becomes a path on disk.

use std::fmt;
use std::str::FromStr;

use super::S3Error;

/// S3 keys are at most this many bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// A key segment becomes a file name, and file names are at most 255 bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Names starting with this are flux-engine's own (temp files, staging
/// folders, locks) and are refused as key segments.
pub const RESERVED_PREFIX: &str = ".flux-";

/// A validated `s3://BUCKET/KEY`. The key may be empty (the bucket itself)
/// or end with `/` (a prefix, S3's idea of a folder).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Uri {
    bucket: String,
    key: String,
}

impl S3Uri {
    /// Parses and validates `s3://BUCKET/KEY`.
    pub fn parse(text: &str) -> Result<S3Uri, S3Error> {
        let invalid = |reason: String| S3Error::InvalidUri {
            uri: text.to_string(),
            reason,
        };
        let rest = match text.strip_prefix("s3://") {
            Some(rest) => rest,
            None => {
                let reason = if text
                    .get(..5)
                    .is_some_and(|s| s.eq_ignore_ascii_case("s3://"))
                {
                    "the scheme must be lowercase `s3://`".to_string()
                } else {
                    "it must start with `s3://`, as in s3://my-bucket/path/to/key".to_string()
                };
                return Err(invalid(reason));
            }
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(invalid)?;
        check_key(key).map_err(invalid)?;
        Ok(S3Uri {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// A URI from its parts, validated like [`S3Uri::parse`].
    pub fn new(bucket: &str, key: &str) -> Result<S3Uri, S3Error> {
        S3Uri::parse(&format!("s3://{bucket}/{key}"))
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key, without a leading `/`; empty for the bucket itself.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this names a prefix (a "folder"): the bucket itself or a key
    /// ending with `/`.
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// The same location as a prefix: `s3://b/out` becomes `s3://b/out/`.
    pub fn as_prefix(&self) -> S3Uri {
        let mut uri = self.clone();
        if !uri.is_prefix() {
            uri.key.push('/');
        }
        uri
    }

    /// `relative` appended below this URI taken as a prefix:
    /// `s3://b/out` joined with `x/y.csv` is `s3://b/out/x/y.csv`.
    pub fn join(&self, relative: &str) -> Result<S3Uri, S3Error> {
        let prefix = self.as_prefix();
        S3Uri::new(&prefix.bucket, &format!("{}{relative}", prefix.key))
    }

    /// The part of this key below `prefix` (taken as a prefix), if this URI
    /// is inside it.
    pub fn relative_to(&self, prefix: &S3Uri) -> Option<&str> {
        let prefix = prefix.as_prefix();
        if prefix.bucket != self.bucket {
            return None;
        }
        self.key.strip_prefix(prefix.key.as_str())
    }

    /// Whether this prefix and `other` overlap: one holds the other, or
    /// they are the same (both taken as prefixes).
    pub fn overlaps(&self, other: &S3Uri) -> bool {
        let (a, b) = (self.as_prefix(), other.as_prefix());
        a.bucket == b.bucket && (a.key.starts_with(&b.key) || b.key.starts_with(&a.key))
    }

    /// The first two of `prefixes` that overlap, if any.
    pub fn first_overlap(prefixes: &[S3Uri]) -> Option<(&S3Uri, &S3Uri)> {
        prefixes.iter().enumerate().find_map(|(i, a)| {
            prefixes[i + 1..]
                .iter()
                .find(|b| a.overlaps(b))
                .map(|b| (a, b))
        })
    }

    /// The key's non-empty segments, the folders and the file name on disk.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &str> {
        self.key.split('/').filter(|s| !s.is_empty())
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl FromStr for S3Uri {
    type Err = S3Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        S3Uri::parse(s)
    }
}

/// A task field holding an `s3://` URI.
impl<'de> serde::Deserialize<'de> for S3Uri {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        S3Uri::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An `s3://` prefix (a "folder") as a task field gives it: written with
/// or without its final `/`, kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Prefix {
    uri: S3Uri,
    written: String,
}

impl S3Prefix {
    pub fn uri(&self) -> &S3Uri {
        &self.uri
    }

    pub fn into_uri(self) -> S3Uri {
        self.uri
    }

    /// The text as the DAG wrote it (what a production resource is given:
    /// a crawler's target path, a place some policy covers).
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// The URI as the DAG wrote it, without the `/` the prefix adds.
    pub fn as_written_uri(&self) -> S3Uri {
        S3Uri::parse(&self.written).unwrap_or_else(|_| self.uri.clone())
    }
}

impl std::ops::Deref for S3Prefix {
    type Target = S3Uri;

    fn deref(&self) -> &S3Uri {
        &self.uri
    }
}

impl fmt::Display for S3Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

impl FromStr for S3Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if !text.starts_with("s3://") {
            return Err(format!("must be an s3:// prefix, found {text:?}"));
        }
        S3Uri::parse(text)
            .map(|uri| S3Prefix {
                uri: uri.as_prefix(),
                written: text.to_string(),
            })
            .map_err(|e| e.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for S3Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("the bucket name is missing".to_string());
    }
    let len = bucket.len();
    if !(3..=63).contains(&len) {
        return Err(format!(
            "the bucket name `{bucket}` has {len} characters; bucket names have 3 to 63"
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (bucket names are lowercase)"
        } else {
            ""
        };
        return Err(format!(
            "the bucket name `{bucket}` contains {c:?}; only lowercase letters, digits, `.` and `-` are allowed{hint}"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(bucket.chars().next()) || !alnum(bucket.chars().last()) {
        return Err(format!(
            "the bucket name `{bucket}` must start and end with a letter or a digit"
        ));
    }
    if bucket.contains("..") {
        return Err(format!(
            "the bucket name `{bucket}` has two adjacent periods"
        ));
    }
    let parts: Vec<&str> = bucket.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "the bucket name `{bucket}` is formatted as an IP address"
        ));
    }
    for reserved in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if bucket.starts_with(reserved) {
            return Err(format!(
                "the bucket name `{bucket}` starts with `{reserved}`, which S3 reserves"
            ));
        }
    }
    for reserved in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if bucket.ends_with(reserved) {
            return Err(format!(
                "the bucket name `{bucket}` ends with `{reserved}`, which S3 reserves"
            ));
        }
    }
    Ok(())
}

/// Keys that could leave the bucket's folder, or that a file system cannot
/// hold, are refused.
fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes long; S3 keys are at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if key.contains('\0') {
        return Err("the key contains a NUL character".to_string());
    }
    if key.contains('\\') {
        return Err("the key contains a backslash; separate folders with `/`".to_string());
    }
    if key.starts_with('/') {
        return Err(
            "the key starts with `/` (an absolute path); write one slash after the bucket, as in s3://bucket/key"
                .to_string(),
        );
    }
    let segments: Vec<&str> = key.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            // A trailing slash marks a prefix; the bucket itself has no key.
            "" if i == last => {}
            "" => return Err("the key has an empty segment (`//`)".to_string()),
            ".." => {
                return Err("the key has a `..` segment, which would leave the bucket".to_string());
            }
            "." => return Err("the key has a `.` segment".to_string()),
            s if s.starts_with(RESERVED_PREFIX) => {
                return Err(format!(
                    "the key segment `{s}` starts with `{RESERVED_PREFIX}`, which flux-engine reserves for its staging files"
                ));
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(format!(
                    "a key segment is {} bytes long; each part between slashes becomes a file name and may have at most {MAX_SEGMENT_BYTES}",
                    s.len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match S3Uri::parse(text) {
            Err(S3Error::InvalidUri { uri, reason }) => {
                assert_eq!(uri, text, "the error names the URI");
                reason
            }
            other => panic!("{text:?} must be refused, got {other:?}"),
        }
    }

    #[test]
    fn parses_bucket_and_key() {
        let uri = S3Uri::parse("s3://my-bucket.data/raw/2024/a.csv").unwrap();
        assert_eq!(uri.bucket(), "my-bucket.data");
        assert_eq!(uri.key(), "raw/2024/a.csv");
        assert!(!uri.is_prefix());
        assert_eq!(uri.to_string(), "s3://my-bucket.data/raw/2024/a.csv");
        let bucket = S3Uri::parse("s3://abc").unwrap();
        assert_eq!(bucket.key(), "");
        assert!(bucket.is_prefix());
        assert_eq!(bucket, S3Uri::parse("s3://abc/").unwrap());
        let prefix = S3Uri::parse("s3://abc/raw/").unwrap();
        assert!(prefix.is_prefix());
        assert_eq!(
            S3Uri::parse("s3://abc/raw").unwrap().as_prefix(),
            prefix,
            "as_prefix adds the slash"
        );
        assert_eq!(
            prefix.join("x/y.csv").unwrap().to_string(),
            "s3://abc/raw/x/y.csv"
        );
        assert_eq!(
            S3Uri::parse("s3://abc/raw/x/y.csv")
                .unwrap()
                .relative_to(&prefix),
            Some("x/y.csv")
        );
        assert_eq!(
            S3Uri::parse("s3://abc/rawx").unwrap().relative_to(&prefix),
            None
        );
        // Keys may hold spaces, unicode and dots inside names.
        S3Uri::parse("s3://abc/a b/ünï.code/..hidden/.x").unwrap();
    }

    #[test]
    fn refuses_bad_schemes_and_buckets() {
        assert!(reason("/tmp/x").contains("must start with `s3://`"));
        assert!(reason("S3://abc/x").contains("lowercase"));
        assert!(reason("s3:/abc/x").contains("s3://"));
        assert!(reason("s3:///x").contains("bucket name is missing"));
        assert!(reason("s3://ab/x").contains("3 to 63"));
        assert!(reason(&format!("s3://{}/x", "a".repeat(64))).contains("3 to 63"));
        assert!(reason("s3://My-Bucket/x").contains("lowercase"));
        assert!(reason("s3://my_bucket/x").contains("'_'"));
        assert!(reason("s3://-abc/x").contains("start and end"));
        assert!(reason("s3://abc-/x").contains("start and end"));
        assert!(reason("s3://a..b/x").contains("adjacent periods"));
        assert!(reason("s3://192.168.1.2/x").contains("IP address"));
        assert!(reason("s3://xn--abc/x").contains("reserves"));
        assert!(reason("s3://abc-s3alias/x").contains("reserves"));
        S3Uri::parse("s3://1.2.3.4.5/x").unwrap();
        S3Uri::parse(&format!("s3://{}/x", "a".repeat(63))).unwrap();
    }

    #[test]
    fn refuses_keys_that_escape_the_bucket() {
        for (text, why) in [
            ("s3://abc/../etc/passwd", "`..` segment"),
            ("s3://abc/a/../../x", "`..` segment"),
            ("s3://abc/a/..", "`..` segment"),
            ("s3://abc/..", "`..` segment"),
            ("s3://abc/./x", "`.` segment"),
            ("s3://abc//etc/passwd", "absolute path"),
            ("s3://abc/a//b", "empty segment"),
            ("s3://abc/a\\..\\b", "backslash"),
            ("s3://abc/a\0b", "NUL"),
            ("s3://abc/.flux-v.x/y", "reserves"),
            ("s3://abc/a/.flux-part.1", "reserves"),
        ] {
            let r = reason(text);
            assert!(r.contains(why), "{text:?}: {r}");
        }
        assert!(reason(&format!("s3://abc/{}", "a".repeat(256))).contains("255"));
        assert!(reason(&format!("s3://abc/{}", "a/".repeat(513))).contains("1024"));
        // Joining cannot escape either.
        let prefix = S3Uri::parse("s3://abc/out/").unwrap();
        assert!(prefix.join("../x").is_err());
        assert!(prefix.join("/x").is_err());
    }
}
