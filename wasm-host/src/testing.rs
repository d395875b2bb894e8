//! Test guests (feature `testing`): connectors written in WAT and made into components at
//! test time with `wat` and `wit-component`, as no wasm32 Rust target can be installed
//! here. The constant answers (`spec`, `discover`) are laid out in a data segment by a
//! small canonical-ABI writer driven by `wit-parser`'s sizes; `read` is hand-written WAT
//! whose offsets come from the same sizes.
//!
//! A guest reads `<url>[&token=<token>]` (its `url` option) and hands the body to the host
//! as an NDJSON page, the next token taken from the `x-next-token` response header: the
//! fixture API's `/ndjson_grow`. Filters `id > N` and `id >= N` go to the API as `&after=`;
//! other filters are reported inexact, for the host to apply. [`Behaviour`] switches turn it into a guest that misbehaves.

use std::path::{Path, PathBuf};

use wit_parser::{Resolve, SizeAlign, Type, TypeDefKind, WorldId};

/// What a test guest does in `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Fetches the page and passes it on.
    PassThrough,
    /// Spins forever.
    Loop,
    /// Grows its memory by 1 GiB.
    MemoryGrab,
    /// Requests a host it was not granted, ignores the refusal and returns an empty page.
    ForbiddenHost,
    /// Returns a page that is not NDJSON.
    MalformedPage,
    /// Writes 100000 log lines, then passes the page on.
    LogFlood,
}

/// A test guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    /// The hosts its spec says it needs.
    pub hosts: Vec<String>,
    /// The environment variables its spec says it needs.
    pub env: Vec<String>,
    pub behaviour: Behaviour,
    /// Table `items`'s columns: name, `data-type` case index (0 boolean, 1 int64, 2 float64,
    /// 3 utf8, 4 timestamp-us, 5 json), nullable. The first is the pushdown column.
    pub fields: Vec<(String, u32, bool)>,
}

impl Guest {
    pub fn new(name: &str, hosts: &[&str], behaviour: Behaviour) -> Self {
        Guest {
            name: name.to_string(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            behaviour,
            fields: vec![
                ("id".into(), 1, false),
                ("name".into(), 3, true),
                ("amount".into(), 1, true),
            ],
        }
    }
}

/// The repository's `wit/` folder.
pub fn wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")
}

/// A canonical-ABI value, for the writer.
#[derive(Debug, Clone)]
pub enum V {
    S(String),
    B(bool),
    I(i64),
    /// A list, record or tuple: its items in order.
    L(Vec<V>),
    /// A variant, enum, option or result case, with its payload.
    C(u32, Option<Box<V>>),
}

fn s(x: &str) -> V {
    V::S(x.to_string())
}

const NONE: V = V::C(0, None);

/// A data segment at `base` and the writer of values into it.
struct Data<'a> {
    resolve: &'a Resolve,
    sizes: &'a SizeAlign,
    base: u32,
    bytes: Vec<u8>,
}

impl Data<'_> {
    fn alloc(&mut self, size: usize, align: usize) -> u32 {
        let align = align.max(1);
        while !(self.bytes.len()).is_multiple_of(align) {
            self.bytes.push(0);
        }
        let at = self.base + self.bytes.len() as u32;
        self.bytes.resize(self.bytes.len() + size, 0);
        at
    }

    fn put(&mut self, at: u32, b: &[u8]) {
        let i = (at - self.base) as usize;
        self.bytes[i..i + b.len()].copy_from_slice(b);
    }

    fn string(&mut self, text: &str) -> (u32, u32) {
        let p = self.alloc(text.len(), 1);
        self.put(p, text.as_bytes());
        (p, text.len() as u32)
    }

    fn size(&self, ty: &Type) -> usize {
        self.sizes.size(ty).size_wasm32()
    }

    fn align(&self, ty: &Type) -> usize {
        self.sizes.align(ty).align_wasm32()
    }

    /// A value of `ty` in a fresh slot; returns its address.
    fn value(&mut self, ty: &Type, v: &V) -> u32 {
        let at = self.alloc(self.size(ty), self.align(ty));
        self.write(ty, v, at);
        at
    }

    fn tag(&mut self, at: u32, tag: wit_parser::Int, case: u32) {
        match tag {
            wit_parser::Int::U8 => self.put(at, &[case as u8]),
            wit_parser::Int::U16 => self.put(at, &(case as u16).to_le_bytes()),
            _ => self.put(at, &case.to_le_bytes()),
        }
    }

    fn write(&mut self, ty: &Type, v: &V, at: u32) {
        match (ty, v) {
            (Type::Bool, V::B(b)) => self.put(at, &[*b as u8]),
            (Type::U8 | Type::S8, V::I(i)) => self.put(at, &[*i as u8]),
            (Type::U16 | Type::S16, V::I(i)) => self.put(at, &(*i as u16).to_le_bytes()),
            (Type::U32 | Type::S32, V::I(i)) => self.put(at, &(*i as u32).to_le_bytes()),
            (Type::U64 | Type::S64, V::I(i)) => self.put(at, &i.to_le_bytes()),
            (Type::String, V::S(text)) => {
                let (p, n) = self.string(text);
                self.put(at, &p.to_le_bytes());
                self.put(at + 4, &n.to_le_bytes());
            }
            (Type::Id(id), v) => {
                let kind = self.resolve.types[*id].kind.clone();
                self.write_def(&kind, v, at);
            }
            (ty, v) => panic!("the test guest writer cannot write {v:?} as {ty:?}"),
        }
    }

    fn write_def(&mut self, kind: &TypeDefKind, v: &V, at: u32) {
        let fields = |tys: Vec<Type>, items: &[V], d: &mut Self| {
            let offsets: Vec<usize> = d
                .sizes
                .field_offsets(tys.iter())
                .into_iter()
                .map(|(o, _)| o.size_wasm32())
                .collect();
            assert_eq!(tys.len(), items.len(), "fields of {kind:?}");
            for ((ty, item), off) in tys.iter().zip(items).zip(offsets) {
                d.write(ty, item, at + off as u32);
            }
        };
        match (kind, v) {
            (TypeDefKind::Type(t), v) => self.write(t, v, at),
            (TypeDefKind::Record(r), V::L(items)) => {
                fields(r.fields.iter().map(|f| f.ty).collect(), items, self)
            }
            (TypeDefKind::Tuple(t), V::L(items)) => fields(t.types.clone(), items, self),
            (TypeDefKind::List(elem), V::L(items)) => {
                let (size, align) = (self.size(elem), self.align(elem));
                let p = self.alloc(size * items.len(), align);
                for (i, item) in items.iter().enumerate() {
                    self.write(elem, item, p + (i * size) as u32);
                }
                self.put(at, &p.to_le_bytes());
                self.put(at + 4, &(items.len() as u32).to_le_bytes());
            }
            (TypeDefKind::Enum(e), V::C(case, None)) => self.tag(at, e.tag(), *case),
            (TypeDefKind::Option(t), V::C(case, payload)) => {
                self.tag(at, wit_parser::Int::U8, *case);
                if let Some(p) = payload {
                    let off = self.sizes.payload_offset(wit_parser::Int::U8, [Some(t)]);
                    self.write(t, p, at + off.size_wasm32() as u32);
                }
            }
            (TypeDefKind::Result(r), V::C(case, payload)) => {
                self.tag(at, wit_parser::Int::U8, *case);
                let off = self
                    .sizes
                    .payload_offset(wit_parser::Int::U8, [r.ok.as_ref(), r.err.as_ref()]);
                let ty = if *case == 0 { r.ok } else { r.err };
                if let (Some(ty), Some(p)) = (ty, payload) {
                    self.write(&ty, p, at + off.size_wasm32() as u32);
                }
            }
            (TypeDefKind::Variant(var), V::C(case, payload)) => {
                self.tag(at, var.tag(), *case);
                let off = self
                    .sizes
                    .payload_offset(var.tag(), var.cases.iter().map(|c| c.ty.as_ref()));
                if let (Some(ty), Some(p)) = (var.cases[*case as usize].ty, payload) {
                    self.write(&ty, p, at + off.size_wasm32() as u32);
                }
            }
            (kind, v) => panic!("the test guest writer cannot write {v:?} as {kind:?}"),
        }
    }

    /// The offset of each field of the record type `ty` (through aliases).
    fn offsets(&self, ty: &Type) -> Vec<usize> {
        let Type::Id(id) = ty else {
            panic!("{ty:?} is not a record")
        };
        match &self.resolve.types[*id].kind {
            TypeDefKind::Type(t) => self.offsets(t),
            TypeDefKind::Record(r) => self
                .sizes
                .field_offsets(r.fields.iter().map(|f| &f.ty))
                .into_iter()
                .map(|(o, _)| o.size_wasm32())
                .collect(),
            k => panic!("{k:?} is not a record"),
        }
    }

    /// A result type's payload offset.
    fn result_payload(&self, ty: &Type) -> (usize, Type, Type) {
        let Type::Id(id) = ty else { panic!() };
        let TypeDefKind::Result(r) = &self.resolve.types[*id].kind else {
            panic!("{ty:?} is not a result")
        };
        let off = self
            .sizes
            .payload_offset(wit_parser::Int::U8, [r.ok.as_ref(), r.err.as_ref()]);
        (off.size_wasm32(), r.ok.unwrap(), r.err.unwrap())
    }
}

/// A type with `use`d aliases followed.
fn dealias(resolve: &Resolve, ty: Type) -> Type {
    match ty {
        Type::Id(id) => match &resolve.types[id].kind {
            TypeDefKind::Type(t) => dealias(resolve, *t),
            _ => ty,
        },
        ty => ty,
    }
}

/// The type named `name` in interface `types`.
fn named(resolve: &Resolve, name: &str) -> Type {
    let (id, _) = resolve
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no type {name}"));
    Type::Id(id)
}

/// The WIT package and its `connector` world, from `wit_dir` (a copy with another version
/// makes a wrong-version guest).
fn world(wit_dir: &Path) -> Result<(Resolve, WorldId), String> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit_dir)
        .map_err(|e| format!("reading {}: {e:#}", wit_dir.display()))?;
    let world = resolve
        .select_world(&[pkg], Some("connector"))
        .map_err(|e| format!("{e:#}"))?;
    Ok((resolve, world))
}

/// The result type of function `func` of interface `iface` (`types`, `host`, `source`).
fn result_of(resolve: &Resolve, iface: &str, func: &str) -> Type {
    let (_, i) = resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some(iface))
        .unwrap_or_else(|| panic!("no interface {iface}"));
    i.functions[func].result.unwrap()
}

/// Builds `guest` into a component against the WIT in `wit_dir`.
pub fn build_with(wit_dir: &Path, guest: &Guest) -> Result<Vec<u8>, String> {
    let (resolve, world) = world(wit_dir)?;
    let version = resolve.packages[resolve.worlds[world].package.unwrap()]
        .name
        .version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let mut sizes = SizeAlign::default();
    sizes.fill(&resolve);
    let mut d = Data {
        resolve: &resolve,
        sizes: &sizes,
        base: 1024,
        bytes: Vec::new(),
    };

    // spec(): a constant.
    let spec_ty = result_of(&resolve, "source", "spec");
    let list = |xs: &[String]| V::L(xs.iter().map(|x| s(x)).collect());
    let spec = V::L(vec![
        s(&guest.name),
        s("0.1.0"),
        V::L(vec![V::L(vec![
            s("url"),
            V::B(true),
            V::B(false),
            s("the page URL, with a query (the token is added as &token=...)"),
        ])]),
        V::L(vec![list(&guest.hosts), list(&guest.env)]),
    ]);
    let spec_at = d.value(&spec_ty, &spec);

    // discover(): one table, `items`.
    let discover_ty = result_of(&resolve, "source", "discover");
    let field =
        |name: &str, ty: u32, nullable: bool| V::L(vec![s(name), V::C(ty, None), V::B(nullable)]);
    let first = guest.fields.first().map_or("id", |f| f.0.as_str());
    let items = V::L(vec![
        s("items"),
        V::L(
            guest
                .fields
                .iter()
                .map(|(n, t, null)| field(n, *t, *null))
                .collect(),
        ),
        NONE,
        V::L(vec![V::L(vec![s(first), V::B(true)])]),
    ]);
    let discover_at = d.value(&discover_ty, &V::C(0, Some(Box::new(V::L(vec![items])))));

    // read(): offsets of its answer and of the host's http-request answer.
    let read_ty = result_of(&resolve, "source", "read");
    let read_at = d.alloc(d.size(&read_ty), d.align(&read_ty));
    let (read_pay, read_ok, read_err) = d.result_payload(&read_ty);
    let resp = d.offsets(&read_ok); // rows, next-token, inexact-filters
    let err_size = d.size(&read_err);
    let err_pay = {
        let Type::Id(id) = dealias(&resolve, read_err) else {
            panic!()
        };
        let TypeDefKind::Variant(v) = &resolve.types[id].kind else {
            panic!("error is not a variant")
        };
        sizes
            .payload_offset(v.tag(), v.cases.iter().map(|c| c.ty.as_ref()))
            .size_wasm32()
    };
    let http_ty = result_of(&resolve, "host", "http-request");
    let http_at = d.alloc(d.size(&http_ty), d.align(&http_ty));
    let (http_pay, http_ok, _) = d.result_payload(&http_ty);
    let hresp = d.offsets(&http_ok); // status, headers, body
    // A filter: column, op, value (a scalar variant whose int case is an s64).
    let filter_ty = named(&resolve, "filter");
    let filter_size = d.size(&filter_ty);
    let fo = d.offsets(&filter_ty);
    let scalar_pay = {
        let Type::Id(id) = named(&resolve, "scalar") else {
            panic!()
        };
        let TypeDefKind::Variant(v) = &resolve.types[id].kind else {
            panic!()
        };
        sizes
            .payload_offset(v.tag(), v.cases.iter().map(|c| c.ty.as_ref()))
            .size_wasm32()
    };
    let (f_col, f_op, f_tag) = (fo[0], fo[1], fo[2]);
    let (f_col_len, f_int) = (f_col + 4, f_tag + scalar_pay);
    // The payload of a one-case-with-list variant or option: after its tag.
    let tagged = 4usize;

    let (k_url, _) = d.string("url");
    let (k_tok, _) = d.string("&token=");
    let (k_after, _) = d.string("&after=");
    let (k_id, _) = d.string("id");
    let (k_get, _) = d.string("GET");
    let (k_next, _) = d.string("x-next-token");
    let (m_nourl, m_nourl_len) = d.string("the url option is missing");
    let (m_status, m_status_len) = d.string("the API answered with an HTTP status other than 200");
    let (forbidden, forbidden_len) = d.string("http://forbidden.invalid/");
    let (malformed, malformed_len) = d.string("{\"id\": oops\n");
    let (logline, logline_len) = d.string(&"a log line that floods ".repeat(4));
    let heap = (d.base as usize + d.bytes.len()).next_multiple_of(8);
    let pages = heap.div_ceil(65536) + 1;

    let prelude = match guest.behaviour {
        Behaviour::Loop => "(loop $spin (br $spin))".to_string(),
        Behaviour::MemoryGrab => "(drop (memory.grow (i32.const 16384)))".to_string(),
        Behaviour::LogFlood => format!(
            "(local.set $e (i32.const 100000))
             (loop $flood
               (call $log (i32.const 2) (i32.const {logline}) (i32.const {logline_len}))
               (local.set $e (i32.sub (local.get $e) (i32.const 1)))
               (br_if $flood (local.get $e)))"
        ),
        _ => String::new(),
    };
    let url_override = if guest.behaviour == Behaviour::ForbiddenHost {
        format!(
            "(local.set $url (i32.const {forbidden})) (local.set $ulen (i32.const {forbidden_len}))"
        )
    } else {
        String::new()
    };
    let ret = read_at as usize;
    let (rows_at, next_at, inexact_at) = (
        ret + read_pay + resp[0],
        ret + read_pay + resp[1],
        ret + read_pay + resp[2],
    );
    let http = http_at as usize;
    let (status_at, hdr_at, body_at) = (
        http + http_pay + hresp[0],
        http + http_pay + hresp[1],
        http + http_pay + hresp[2],
    );
    let empty_page = format!(
        "(i32.store8 (i32.const {ret}) (i32.const 0))
         (i32.store8 (i32.const {rows_at}) (i32.const 1))
         (i32.store (i32.const {rp}) (i32.const 0))
         (i32.store (i32.const {rl}) (i32.const 0))
         (i32.store8 (i32.const {next_at}) (i32.const 0))
         (i32.store (i32.const {inexact_at}) (i32.const 0))
         (i32.store (i32.const {il}) (i32.const 0))
         (return (i32.const {ret}))",
        rp = rows_at + tagged,
        rl = rows_at + tagged + 4,
        il = inexact_at + 4,
    );
    let on_http_error = if guest.behaviour == Behaviour::ForbiddenHost {
        empty_page.clone()
    } else {
        format!(
            "(memory.copy (i32.const {re}) (i32.const {he}) (i32.const {err_size}))
             (i32.store8 (i32.const {ret}) (i32.const 1))
             (return (i32.const {ret}))",
            re = ret + read_pay,
            he = http + http_pay,
        )
    };
    let malformed_override = if guest.behaviour == Behaviour::MalformedPage {
        format!(
            "(i32.store (i32.const {rp}) (i32.const {malformed}))
             (i32.store (i32.const {rl}) (i32.const {malformed_len}))",
            rp = rows_at + tagged,
            rl = rows_at + tagged + 4,
        )
    } else {
        String::new()
    };
    let data_hex: String = d.bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    let base = d.base;
    let host = format!("hakiri:connector/host@{version}");
    let source = format!("hakiri:connector/source@{version}");
    let wat = format!(
        r#"(module
  (import "{host}" "http-request" (func $http (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "{host}" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") {pages})
  (global $heap (mut i32) (i32.const {heap}))
  (data (i32.const {base}) "{data_hex}")
  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
      (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (block $fits
      (br_if $fits (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.const 1)
        (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536))))))
    (if (local.get $old_size) (then (memory.copy (local.get $p) (local.get $old) (local.get $old_size))))
    (local.get $p))
  (func $eq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 1))
  ;; The element of a list<tuple<string, string>> whose first string is `key`, or 0.
  (func $find (param $list i32) (param $n i32) (param $key i32) (param $klen i32) (result i32)
    (local $i i32) (local $e i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $e (i32.add (local.get $list) (i32.mul (local.get $i) (i32.const 16))))
        (if (call $eq (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)) (local.get $key) (local.get $klen))
          (then (return (local.get $e))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 0))
;; The decimal digits of a non-negative `v` at `out`; returns how many.
  (func $itoa (param $v i64) (param $out i32) (result i32)
    (local $n i32) (local $t i64) (local $i i32)
    (local.set $t (local.get $v))
    (loop $count
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
      (br_if $count (i64.ne (local.get $t) (i64.const 0))))
    (local.set $t (local.get $v))
    (local.set $i (local.get $n))
    (loop $digits
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $out) (local.get $i))
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $t) (i64.const 10)))))
      (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
      (br_if $digits (local.get $i)))
    (local.get $n))
  (func $fail (param $m i32) (param $n i32) (result i32)
    (i32.store8 (i32.const {ret}) (i32.const 1))
    (i32.store8 (i32.const {err_tag}) (i32.const 4))
    (i32.store (i32.const {err_ptr}) (local.get $m))
    (i32.store (i32.const {err_len}) (local.get $n))
    (i32.const {ret}))
  (func (export "{source}#spec") (result i32) (i32.const {spec_at}))
  (func (export "{source}#discover") (param i32 i32) (result i32) (i32.const {discover_at}))
  (func (export "{source}#read")
    (param $cfg i32) (param $ncfg i32) (param $tbl i32) (param $ntbl i32)
    (param $proj_some i32) (param $proj i32) (param $nproj i32)
    (param $filters i32) (param $nfilters i32)
    (param $limit_some i32) (param $limit i64)
    (param $tok_some i32) (param $tok i32) (param $ntok i32)
    (result i32)
    (local $e i32) (local $url i32) (local $ulen i32) (local $blen i32) (local $h i32)
    (local $i i32) (local $f i32) (local $op i32) (local $v i64) (local $inexact i32) (local $ni i32)
    {prelude}
    (local.set $e (call $find (local.get $cfg) (local.get $ncfg) (i32.const {k_url}) (i32.const 3)))
    (if (i32.eqz (local.get $e)) (then (return (call $fail (i32.const {m_nourl}) (i32.const {m_nourl_len})))))
    ;; url = base [&token=T] [&after=N for each id > N / id >= N+1]; other filters inexact
    (local.set $blen (i32.load offset=12 (local.get $e)))
    (local.set $url (call $realloc (i32.const 0) (i32.const 0) (i32.const 1)
      (i32.add (i32.add (local.get $blen) (i32.add (i32.const 7) (local.get $ntok)))
               (i32.mul (local.get $nfilters) (i32.const 28)))))
    (local.set $inexact (call $realloc (i32.const 0) (i32.const 0) (i32.const 4)
      (i32.mul (local.get $nfilters) (i32.const 4))))
    (memory.copy (local.get $url) (i32.load offset=8 (local.get $e)) (local.get $blen))
    (local.set $ulen (local.get $blen))
    (if (local.get $tok_some)
      (then
        (memory.copy (i32.add (local.get $url) (local.get $ulen)) (i32.const {k_tok}) (i32.const 7))
        (memory.copy (i32.add (local.get $url) (i32.add (local.get $ulen) (i32.const 7)))
                     (local.get $tok) (local.get $ntok))
        (local.set $ulen (i32.add (local.get $ulen) (i32.add (i32.const 7) (local.get $ntok))))))
    (block $filters_done
      (loop $filters
        (br_if $filters_done (i32.ge_u (local.get $i) (local.get $nfilters)))
        (local.set $f (i32.add (local.get $filters) (i32.mul (local.get $i) (i32.const {filter_size}))))
        (local.set $op (i32.load8_u offset={f_op} (local.get $f)))
        (local.set $v (i64.load offset={f_int} (local.get $f)))
        (if (i32.and
              (i32.and
                (call $eq (i32.load offset={f_col} (local.get $f)) (i32.load offset={f_col_len} (local.get $f)) (i32.const {k_id}) (i32.const 2))
                (i32.eq (i32.load8_u offset={f_tag} (local.get $f)) (i32.const 2)))
              (i32.and
                (i32.or (i32.eq (local.get $op) (i32.const 4))
                        (i32.and (i32.eq (local.get $op) (i32.const 5)) (i64.gt_s (local.get $v) (i64.const 0))))
                (i64.ge_s (local.get $v) (i64.const 0))))
          (then
            (if (i32.eq (local.get $op) (i32.const 5)) (then (local.set $v (i64.sub (local.get $v) (i64.const 1)))))
            (memory.copy (i32.add (local.get $url) (local.get $ulen)) (i32.const {k_after}) (i32.const 7))
            (local.set $ulen (i32.add (local.get $ulen) (i32.const 7)))
            (local.set $ulen (i32.add (local.get $ulen)
              (call $itoa (local.get $v) (i32.add (local.get $url) (local.get $ulen))))))
          (else
            (i32.store (i32.add (local.get $inexact) (i32.mul (local.get $ni) (i32.const 4))) (local.get $i))
            (local.set $ni (i32.add (local.get $ni) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $filters)))
    {url_override}
    (call $http (i32.const {k_get}) (i32.const 3) (local.get $url) (local.get $ulen)
                (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {http}))
    (if (i32.load8_u (i32.const {http})) (then {on_http_error}))
    (if (i32.ne (i32.load16_u (i32.const {status_at})) (i32.const 200))
      (then (return (call $fail (i32.const {m_status}) (i32.const {m_status_len})))))
    (i32.store8 (i32.const {ret}) (i32.const 0))
    (i32.store8 (i32.const {rows_at}) (i32.const 1))
    (i32.store (i32.const {rows_ptr}) (i32.load (i32.const {body_at})))
    (i32.store (i32.const {rows_len}) (i32.load (i32.const {body_len})))
    {malformed_override}
    (local.set $h (call $find (i32.load (i32.const {hdr_at})) (i32.load (i32.const {hdr_len}))
                              (i32.const {k_next}) (i32.const 12)))
    (if (local.get $h)
      (then
        (i32.store8 (i32.const {next_at}) (i32.const 1))
        (i32.store (i32.const {next_ptr}) (i32.load offset=8 (local.get $h)))
        (i32.store (i32.const {next_len}) (i32.load offset=12 (local.get $h))))
      (else (i32.store8 (i32.const {next_at}) (i32.const 0))))
    (i32.store (i32.const {inexact_at}) (local.get $inexact))
    (i32.store (i32.const {inexact_len}) (local.get $ni))
    (i32.const {ret})))
"#,
        err_tag = ret + read_pay,
        err_ptr = ret + read_pay + err_pay,
        err_len = ret + read_pay + err_pay + 4,
        rows_ptr = rows_at + tagged,
        rows_len = rows_at + tagged + 4,
        body_len = body_at + 4,
        hdr_len = hdr_at + 4,
        next_ptr = next_at + tagged,
        next_len = next_at + tagged + 4,
        inexact_len = inexact_at + 4,
    );
    component(&resolve, world, &wat)
}

/// [`build_with`] against the repository's WIT.
pub fn build(guest: &Guest) -> Vec<u8> {
    build_with(&wit_dir(), guest).unwrap_or_else(|e| panic!("building test guest: {e}"))
}

/// A guest built against `hakiri:connector@<version>` instead (a copy of the WIT with the
/// version changed).
pub fn build_version(guest: &Guest, version: &str, scratch: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(wit_dir().join("connector.wit")).unwrap();
    let dir = scratch.join(format!("wit-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("connector.wit"),
        text.replace(
            &format!("hakiri:connector@{}", crate::WIT_VERSION),
            &format!("hakiri:connector@{version}"),
        ),
    )
    .unwrap();
    build_with(&dir, guest).unwrap()
}

/// A component of another world: it exports one function `run`.
pub fn other_world() -> Vec<u8> {
    let mut resolve = Resolve::default();
    let pkg = resolve
        .push_str(
            "other.wit",
            "package other:thing@1.0.0;\nworld app {\n  export run: func();\n}\n",
        )
        .unwrap();
    let world = resolve.select_world(&[pkg], Some("app")).unwrap();
    component(
        &resolve,
        world,
        r#"(module (memory (export "memory") 1) (func (export "run")))"#,
    )
    .unwrap()
}

fn component(resolve: &Resolve, world: WorldId, wat: &str) -> Result<Vec<u8>, String> {
    let mut module = wat::parse_str(wat).map_err(|e| format!("the test guest's WAT: {e}"))?;
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| format!("{e:#}"))?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("encoding the test guest: {e:#}"))
}
