//! Reading an upstream answer with a size cap: PocketBase and Coolify bodies are streamed into memory
//! only up to a limit chosen per endpoint, so a hostile or broken upstream answering hundreds of
//! megabytes costs the bridge at most the limit, and the caller gets an error naming the endpoint.

use futures_util::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is larger than {}", human(*.limit))]
    TooLarge { limit: usize },
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
}

/// What reading a body element by element can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ElementsError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The body is not a JSON array, or an element does not decode.
    #[error("{0}")]
    Malformed(String),
}

/// `n` bytes for a message: "64 MiB", "512 KiB".
pub fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// The whole body, if it is at most `limit` bytes. A larger declared `Content-Length` fails before
/// anything is read.
pub async fn read(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    let declared = resp.content_length().and_then(|n| usize::try_from(n).ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most the first `limit` bytes of the body, the rest dropped unread: for error answers, whose text
/// only feeds a message.
pub async fn read_prefix(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// A JSON array read element by element as its chunks arrive, each element handed to `each` as soon as
/// it ends: only one element is held at a time, never the whole body (a team's service list runs to
/// tens of megabytes). The size limit counts every byte read, as [`read`] does.
pub async fn read_array_each(
    resp: reqwest::Response,
    limit: usize,
    each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), ElementsError> {
    split_each(resp, limit, Splitter::Array(ArraySplitter::default()), each).await
}

/// Like [`read_array_each`] for the array under the key `field` of a JSON object: the object's other
/// members pass by unkept, and an object without `field` has no elements. A project environment lists
/// its tenant's services in full, composes and all, under `services`.
pub async fn read_field_each(
    resp: reqwest::Response,
    limit: usize,
    field: &str,
    each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), ElementsError> {
    split_each(resp, limit, Splitter::Field(FieldSplitter::new(field)), each).await
}

enum Splitter {
    Array(ArraySplitter),
    Field(FieldSplitter),
}

async fn split_each(
    resp: reqwest::Response,
    limit: usize,
    mut split: Splitter,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), ElementsError> {
    if resp
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .is_some_and(|n| n > limit)
    {
        return Err(ReadError::TooLarge { limit }.into());
    }
    let mut total = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::from)?;
        total += chunk.len();
        if total > limit {
            return Err(ReadError::TooLarge { limit }.into());
        }
        split.feed(&chunk, &mut each).map_err(ElementsError::Malformed)?;
    }
    split.finish().map_err(ElementsError::Malformed)
}

impl Splitter {
    fn feed(&mut self, bytes: &[u8], each: &mut impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
        match self {
            Splitter::Array(s) => s.feed(bytes, each),
            Splitter::Field(s) => s.feed(bytes, each),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Splitter::Array(s) => s.finish(),
            Splitter::Field(s) => s.finish(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the opening `[`.
    #[default]
    Before,
    /// After `[`: an element or `]`.
    Opened,
    /// After an element: `,` or `]`.
    AfterElement,
    /// After `,`: an element.
    AfterComma,
    /// Inside an element.
    Element,
    /// After the closing `]`: whitespace only.
    Closed,
}

/// Finds where each element of a top-level JSON array begins and ends (strings, escapes and nesting
/// followed; the elements themselves are checked by whoever decodes them).
///
/// Written here because serde_json reads an array element by element only from a blocking reader
/// (`Deserializer::from_reader` with a `SeqAccess` visitor): that would park a thread per list call on the
/// async body and leave it behind when the call is cancelled. Splitting on the async stream keeps the call on
/// the runtime, and serde_json still decodes (and validates) each element.
#[derive(Debug, Default)]
struct ArraySplitter {
    place: Place,
    element: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl ArraySplitter {
    fn feed(&mut self, bytes: &[u8], each: &mut impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
        let used = self.feed_upto(bytes, each)?;
        match bytes[used..].iter().find(|b| !b.is_ascii_whitespace()) {
            Some(&b) => Err(format!("unexpected {:?} after the JSON array", char::from(b))),
            None => Ok(()),
        }
    }

    /// Takes bytes until the array closes; returns how many it took (all of them while it is open).
    fn feed_upto(&mut self, bytes: &[u8], each: &mut impl FnMut(&[u8]) -> Result<(), String>) -> Result<usize, String> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.place == Place::Closed {
                return Ok(i);
            }
            if self.place == Place::Element {
                let Some(taken) = self.in_element(b) else {
                    continue;
                };
                each(&self.element)?;
                self.element.clear();
                self.place = Place::AfterElement;
                if taken {
                    continue;
                }
            }
            if b.is_ascii_whitespace() {
                continue;
            }
            self.place = match (self.place, b) {
                (Place::Before, b'[') => Place::Opened,
                (Place::Opened | Place::AfterElement, b']') => Place::Closed,
                (Place::AfterElement, b',') => Place::AfterComma,
                (Place::Opened | Place::AfterComma, _) if !matches!(b, b',' | b']' | b'}' | b':') => {
                    self.start(b);
                    Place::Element
                }
                (Place::Before, _) => return Err("the answer is not a JSON array".into()),
                (place, b) => return Err(format!("unexpected {:?} in the JSON array ({place:?})", char::from(b))),
            };
        }
        Ok(bytes.len())
    }

    fn start(&mut self, b: u8) {
        self.element.push(b);
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth = 1,
            _ => {}
        }
    }

    /// Takes one byte of an element: `None` while the element goes on; when it has ended, whether the
    /// byte was its last (a closing quote or bracket) rather than what follows a number or literal.
    fn in_element(&mut self, b: u8) -> Option<bool> {
        if self.in_string {
            self.element.push(b);
            if closes_string(&mut self.escaped, b) {
                self.in_string = false;
                return (self.depth == 0).then_some(true);
            }
            return None;
        }
        match b {
            b'}' | b']' if self.depth > 0 => {
                self.depth -= 1;
                self.element.push(b);
                (self.depth == 0).then_some(true)
            }
            _ if self.depth == 0 && (matches!(b, b',' | b']') || b.is_ascii_whitespace()) => Some(false),
            b => {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    _ => {}
                }
                self.element.push(b);
                None
            }
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.place {
            Place::Closed => Ok(()),
            _ => Err("the JSON array ends early".into()),
        }
    }
}

/// Takes one byte inside a JSON string: whether it is the closing quote (`escaped` follows backslashes).
fn closes_string(escaped: &mut bool, b: u8) -> bool {
    if *escaped {
        *escaped = false;
        false
    } else {
        *escaped = b == b'\\';
        b == b'"'
    }
}

/// Where a [`FieldSplitter`] is in the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    /// Before the opening `{`.
    Before,
    /// After `{` or `,`: a key (or, after `{`, the closing `}`).
    Key,
    /// Inside a key's quotes.
    InKey,
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Value,
    /// Inside a value passed over.
    Skipping,
    /// Inside the wanted field's array.
    Wanted,
    /// After a value: `,` or `}`.
    AfterValue,
    /// After the closing `}`: whitespace only.
    Closed,
}

/// Finds the array under one key of a top-level JSON object and splits it as [`ArraySplitter`] does; the
/// other members are followed (strings, escapes and nesting) only to find where they end, never kept.
#[derive(Debug)]
struct FieldSplitter {
    field: Vec<u8>,
    member: Member,
    key: Vec<u8>,
    array: ArraySplitter,
    /// Nesting of the value passed over; 0 inside a number or literal.
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl FieldSplitter {
    fn new(field: &str) -> FieldSplitter {
        FieldSplitter {
            field: field.as_bytes().to_vec(),
            member: Member::Before,
            key: Vec::new(),
            array: ArraySplitter::default(),
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    fn feed(&mut self, bytes: &[u8], each: &mut impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
        let mut i = 0;
        while i < bytes.len() {
            if self.member == Member::Wanted {
                i += self.array.feed_upto(&bytes[i..], each)?;
                if self.array.place == Place::Closed {
                    self.member = Member::AfterValue;
                }
                continue;
            }
            self.take(bytes[i])?;
            i += 1;
        }
        Ok(())
    }

    fn take(&mut self, b: u8) -> Result<(), String> {
        if self.member == Member::InKey {
            if closes_string(&mut self.escaped, b) {
                self.member = Member::Colon;
            } else {
                self.key.push(b);
            }
            return Ok(());
        }
        if self.member == Member::Skipping {
            return self.skip(b);
        }
        if b.is_ascii_whitespace() {
            return Ok(());
        }
        self.member = match (self.member, b) {
            (Member::Before, b'{') => Member::Key,
            (Member::Key, b'"') => {
                self.key.clear();
                Member::InKey
            }
            (Member::Key | Member::AfterValue, b'}') => Member::Closed,
            (Member::Colon, b':') => Member::Value,
            (Member::Value, b'[') if self.key == self.field => {
                self.array = ArraySplitter::default();
                self.array.place = Place::Opened;
                Member::Wanted
            }
            (Member::Value, _) if !matches!(b, b',' | b'}' | b']' | b':') => {
                self.depth = u32::from(matches!(b, b'{' | b'['));
                self.in_string = b == b'"';
                Member::Skipping
            }
            (Member::AfterValue, b',') => Member::Key,
            (Member::Before, _) => return Err("the answer is not a JSON object".into()),
            (member, b) => {
                return Err(format!(
                    "unexpected {:?} in the JSON object ({member:?})",
                    char::from(b)
                ));
            }
        };
        Ok(())
    }

    /// One byte of a value passed over.
    fn skip(&mut self, b: u8) -> Result<(), String> {
        if self.in_string {
            if closes_string(&mut self.escaped, b) {
                self.in_string = false;
                if self.depth == 0 {
                    self.member = Member::AfterValue;
                }
            }
            return Ok(());
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth > 0 => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.member = Member::AfterValue;
                }
            }
            // A number or literal ends at what follows it.
            _ if self.depth == 0 && (matches!(b, b',' | b'}') || b.is_ascii_whitespace()) => {
                self.member = Member::AfterValue;
                return self.take(b);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        match self.member {
            Member::Closed => Ok(()),
            _ => Err("the JSON object ends early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(mut s: Splitter, chunks: &[&str]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut each = |e: &[u8]| {
            out.push(String::from_utf8_lossy(e).into_owned());
            Ok(())
        };
        for c in chunks {
            s.feed(c.as_bytes(), &mut each)?;
        }
        s.finish()?;
        Ok(out)
    }

    fn split(chunks: &[&str]) -> Result<Vec<String>, String> {
        elements(Splitter::Array(ArraySplitter::default()), chunks)
    }

    fn field(chunks: &[&str]) -> Result<Vec<String>, String> {
        elements(Splitter::Field(FieldSplitter::new("services")), chunks)
    }

    #[test]
    fn arrays_split_into_their_elements_across_chunks() {
        let text = r#" [ {"a": "x]}\"\\", "b": [1, {"c": "}"}]}, "s,]", 12 ,true, [], {} ] "#;
        let want = vec![
            r#"{"a": "x]}\"\\", "b": [1, {"c": "}"}]}"#,
            r#""s,]""#,
            "12",
            "true",
            "[]",
            "{}",
        ];
        assert_eq!(split(&[text]).unwrap(), want);
        // Every split point of the body, including inside strings and escapes.
        for at in 0..text.len() {
            assert_eq!(split(&[&text[..at], &text[at..]]).unwrap(), want, "split at {at}");
        }
        assert_eq!(split(&["[]"]).unwrap(), Vec::<String>::new());
        assert_eq!(split(&["[1]"]).unwrap(), vec!["1"]);
    }

    #[test]
    fn what_is_not_one_whole_array_is_refused() {
        for bad in [
            "",
            "{}",
            "[1,",
            "[1 2]",
            "[,1]",
            "[1,]",
            "[1]]",
            "[1] x",
            "[{\"a\": 1}",
            "[\"open]",
        ] {
            assert!(split(&[bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_objects_field_splits_into_its_elements_and_the_rest_passes_by() {
        // Before and after the field: a string with braces and escapes, a nested "services" that is not
        // the top-level one, numbers and literals at the object's end.
        let text = r#" { "name": "p\"}{[", "deep": {"services": [9], "x": [{"y": "]"}]}, "n": -1.5e3,
            "services" : [ {"uuid": "a", "status": "running:healthy"}, {"uuid": "b\"]"} ] ,
            "redis": [], "t": true, "z": null } "#;
        let want = vec![r#"{"uuid": "a", "status": "running:healthy"}"#, r#"{"uuid": "b\"]"}"#];
        assert_eq!(field(&[text]).unwrap(), want);
        for at in 0..text.len() {
            assert_eq!(field(&[&text[..at], &text[at..]]).unwrap(), want, "split at {at}");
        }
        assert_eq!(field(&[r#"{"services": []}"#]).unwrap(), Vec::<String>::new());
        assert_eq!(
            field(&[r#"{"uuid": "x", "n": 1}"#]).unwrap(),
            Vec::<String>::new(),
            "no such field"
        );
        assert_eq!(field(&["{}"]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn what_is_not_one_whole_object_is_refused() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"services": [1,}"#,
            r#"{"services": [1] "a": 1}"#,
            r#"{"a" 1}"#,
            r#"{"services": [{"a": 1}"#,
            r#"{"a": "open}"#,
            r#"{"services": []} x"#,
        ] {
            assert!(field(&[bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(512 << 10), "512 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
