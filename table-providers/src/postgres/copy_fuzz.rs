//! Fuzz targets for the binary COPY reader (a child of `copy.rs`): a hostile or cut stream
//! must give an error, never a panic or a hang, and how a stream is split into messages
//! must not change what is read. `HAKIRI_FUZZ_CASES` sets the cases (default 256);
//! `scripts/fuzz` runs more.

use datafusion::arrow::array::{Array, ArrayRef};
use hakiri_core::fuzzing::config;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::postgres::types::Kind;

/// One column of each way of reading (oid, `format_type()`).
const TYPES: &[(u32, &str)] = &[
    (21, "smallint"),
    (23, "integer"),
    (20, "bigint"),
    (700, "real"),
    (701, "double precision"),
    (16, "boolean"),
    (25, "text"),
    (17, "bytea"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1184, "timestamptz"),
    (1186, "interval"),
    (2950, "uuid"),
    (1005, "smallint[]"),
    (1007, "integer[]"),
    (1016, "bigint[]"),
    (1021, "real[]"),
    (1022, "double precision[]"),
    (1000, "boolean[]"),
    (1009, "text[]"),
    (1700, "numeric(10,2)"),
    (3802, "jsonb"),
];

fn columns() -> impl Strategy<Value = Vec<PgColumn>> {
    prop::sample::subsequence(TYPES, 0..=TYPES.len()).prop_map(|types| {
        types
            .iter()
            .enumerate()
            .map(|(i, (oid, ty))| PgColumn::new(&format!("c{i}"), *oid, ty, false))
            .collect()
    })
}

fn bytes(n: usize) -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), n..=n).boxed()
}

fn text() -> BoxedStrategy<Vec<u8>> {
    any::<String>().prop_map(String::into_bytes).boxed()
}

/// A one-dimensional array in binary form (no dimension when empty).
fn array(item: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    vec(prop::option::of(item), 0..5)
        .prop_map(|items| {
            let header: &[i32] = if items.is_empty() {
                &[0, 0, 0]
            } else {
                &[1, 1, 0]
            };
            let mut out: Vec<u8> = header.iter().flat_map(|v| v.to_be_bytes()).collect();
            if !items.is_empty() {
                out.extend((items.len() as i32).to_be_bytes());
                out.extend(1i32.to_be_bytes());
            }
            for item in items {
                match item {
                    Some(b) => {
                        out.extend((b.len() as i32).to_be_bytes());
                        out.extend(b);
                    }
                    None => out.extend((-1i32).to_be_bytes()),
                }
            }
            out
        })
        .boxed()
}

/// A field for a column: mostly its binary form, sometimes NULL or random bytes.
fn field(kind: Kind) -> BoxedStrategy<Option<Vec<u8>>> {
    let valid = match kind {
        Kind::Bool => bytes(1),
        Kind::I16 => bytes(2),
        Kind::I32 | Kind::F32 | Kind::Date => bytes(4),
        Kind::I64 | Kind::F64 | Kind::Time | Kind::Timestamp | Kind::TimestampTz => bytes(8),
        Kind::Uuid => bytes(16),
        // Microseconds that fit in nanoseconds, then days and months.
        Kind::Interval => (-(i64::MAX / 1000)..i64::MAX / 1000, any::<[u8; 8]>())
            .prop_map(|(micros, rest)| [micros.to_be_bytes(), rest].concat())
            .boxed(),
        Kind::Text | Kind::AsText => text(),
        Kind::Bytes => vec(any::<u8>(), 0..16).boxed(),
        Kind::ListBool => array(bytes(1)),
        Kind::ListI16 => array(bytes(2)),
        Kind::ListI32 | Kind::ListF32 => array(bytes(4)),
        Kind::ListI64 | Kind::ListF64 => array(bytes(8)),
        Kind::ListText => array(text()),
    };
    prop_oneof![
        8 => valid.prop_map(Some),
        1 => Just(None),
        1 => vec(any::<u8>(), 0..24).prop_map(Some),
    ]
    .boxed()
}

/// A header (with an extension), tuples, the trailer.
fn encode(ext: &[u8], tuples: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend(0i32.to_be_bytes());
    out.extend((ext.len() as i32).to_be_bytes());
    out.extend(ext);
    for t in tuples {
        out.extend((t.len() as i16).to_be_bytes());
        for f in t {
            match f {
                Some(b) => {
                    out.extend((b.len() as i32).to_be_bytes());
                    out.extend(b);
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
    }
    out.extend((-1i16).to_be_bytes());
    out
}

/// Columns and a stream for them: tuples of one field per column (and now and then one
/// more, which is skipped).
fn stream() -> impl Strategy<Value = (Vec<PgColumn>, Vec<u8>, usize)> {
    columns().prop_flat_map(|cols| {
        let mut fields: Vec<BoxedStrategy<Option<Vec<u8>>>> =
            cols.iter().map(|c| field(c.kind)).collect();
        let extra = prop::option::weighted(0.1, field(Kind::Bytes));
        fields.push(extra.prop_map(Option::flatten).boxed());
        let tuple = fields.prop_map(|mut t| {
            // The last strategy is the optional extra field: absent unless it came out Some.
            if t.last().is_some_and(Option::is_none) {
                t.pop();
            }
            t
        });
        (Just(cols), vec(any::<u8>(), 0..6), vec(tuple, 0..8)).prop_map(|(cols, ext, tuples)| {
            let n = tuples.len();
            (cols, encode(&ext, &tuples), n)
        })
    })
}

type Read = std::result::Result<(usize, Vec<ArrayRef>), String>;

/// Reads the whole stream, `chunks` as its messages: the rows and columns, or the error.
fn read(chunks: Vec<Vec<u8>>, cols: &[PgColumn]) -> Read {
    let messages = chunks.into_iter().map(|c| Ok::<_, Error>(Bytes::from(c)));
    let stream = futures::stream::iter(messages);
    let mut reader = CopyReader::new(stream);
    let mut builders: Vec<Builder> = cols.iter().map(|c| Builder::new(c.kind)).collect();
    let mut rows = 0;
    loop {
        let n = futures::executor::block_on(reader.read_into(&mut builders, cols, 3, |e| e))
            .map_err(|e| e.to_string())?;
        rows += n;
        if n < 3 {
            break;
        }
    }
    let arrays = builders
        .iter_mut()
        .zip(cols)
        .map(|(b, c)| b.finish(&c.field).map_err(|e| e.to_string()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((rows, arrays))
}

/// `bytes` cut at `cuts` (empty messages included).
fn split(bytes: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.push(bytes.len());
    let mut from = 0;
    at.into_iter()
        .map(|to| {
            let chunk = bytes[from..to].to_vec();
            from = to;
            chunk
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes, with or without a valid header in front, whole or split.
    #[test]
    fn fuzz_copy_random_bytes(
        cols in columns(),
        header in any::<bool>(),
        tail in vec(any::<u8>(), 0..256),
        cuts in vec(any::<Index>(), 0..6)
    ) {
        let mut bytes = if header { encode(&[], &[]) } else { Vec::new() };
        bytes.truncate(bytes.len().saturating_sub(2)); // no trailer
        bytes.extend(tail);
        let whole = read(vec![bytes.clone()], &cols);
        let parts = read(split(&bytes, &cuts), &cols);
        prop_assert_eq!(format!("{whole:?}"), format!("{parts:?}"));
    }

    /// A well-formed stream split into random messages reads as it does whole: a row per
    /// tuple, each column as long.
    #[test]
    fn fuzz_copy_split_stream(
        (cols, bytes, tuples) in stream(),
        cuts in vec(any::<Index>(), 0..8)
    ) {
        let whole = read(vec![bytes.clone()], &cols);
        if let Ok((rows, arrays)) = &whole {
            prop_assert_eq!(*rows, tuples);
            prop_assert!(arrays.iter().all(|a| Array::len(a.as_ref()) == tuples));
        }
        let parts = read(split(&bytes, &cuts), &cols);
        prop_assert_eq!(format!("{whole:?}"), format!("{parts:?}"));
    }

    /// A stream cut anywhere before the end of its trailer is an error.
    #[test]
    fn fuzz_copy_truncated_stream((cols, bytes, _tuples) in stream(), cut in any::<Index>()) {
        let cut = cut.index(bytes.len());
        prop_assert!(read(vec![bytes[..cut].to_vec()], &cols).is_err());
    }
}
