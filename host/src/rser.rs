//! Just enough of R's serialization format (XDR, version 3) to build task
//! payloads and read simple values without R: for `hako bench` and the
//! tests. The R package uses R's own `serialize()`; the host's verifier
//! (`verify.rs`) reads results on its own terms.
//!
//! What only the tests need (integers, logicals, source-text tasks,
//! attribute and string accessors) is behind the `test-support` feature,
//! so it is not part of the binary.

const NILVALUE: i32 = 254;
const REFSXP: i32 = 255;
const IS_OBJECT: i32 = 1 << 8;
const HAS_ATTR: i32 = 1 << 9;
const HAS_TAG: i32 = 1 << 10;

/// An R object to write.
#[derive(Clone, Debug, PartialEq)]
pub enum RObj {
    Null,
    Sym(String),
    /// A call: function then (optionally named) arguments.
    Lang(Vec<(Option<String>, RObj)>),
    Real(Vec<f64>),
    #[cfg(any(test, feature = "test-support"))]
    Int(Vec<i32>),
    #[cfg(any(test, feature = "test-support"))]
    Lgl(Vec<i32>),
    Str(Vec<String>),
    /// A list, named when any name is given.
    List(Vec<(Option<String>, RObj)>),
}

struct Writer {
    out: Vec<u8>,
    syms: Vec<String>,
}

impl Writer {
    fn int(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn charsxp(&mut self, s: &str) {
        let levels = if s.is_ascii() { 64 } else { 8 };
        self.int(9 | (levels << 12));
        self.int(s.len() as i32);
        self.out.extend_from_slice(s.as_bytes());
    }
    fn sym(&mut self, name: &str) {
        if let Some(i) = self.syms.iter().position(|s| s == name) {
            self.int((((i + 1) as i32) << 8) | REFSXP);
        } else {
            self.syms.push(name.to_string());
            self.int(1);
            self.charsxp(name);
        }
    }
    fn item(&mut self, o: &RObj) {
        match o {
            RObj::Null => self.int(NILVALUE),
            RObj::Sym(s) => self.sym(s),
            RObj::Lang(items) => {
                for (i, (tag, v)) in items.iter().enumerate() {
                    let ty = if i == 0 { 6 } else { 2 };
                    self.int(ty | if tag.is_some() { HAS_TAG } else { 0 });
                    if let Some(t) = tag {
                        self.sym(t);
                    }
                    self.item(v);
                }
                self.int(NILVALUE);
            }
            RObj::Real(v) => {
                self.int(14);
                self.int(v.len() as i32);
                for x in v {
                    self.out.extend_from_slice(&x.to_be_bytes());
                }
            }
            #[cfg(any(test, feature = "test-support"))]
            RObj::Int(v) | RObj::Lgl(v) => {
                self.int(if matches!(o, RObj::Int(_)) { 13 } else { 10 });
                self.int(v.len() as i32);
                for x in v {
                    self.int(*x);
                }
            }
            RObj::Str(v) => {
                self.int(16);
                self.int(v.len() as i32);
                for s in v {
                    self.charsxp(s);
                }
            }
            RObj::List(items) => {
                let named = items.iter().any(|(n, _)| n.is_some());
                self.int(19 | if named { HAS_ATTR } else { 0 });
                self.int(items.len() as i32);
                for (_, v) in items {
                    self.item(v);
                }
                if named {
                    self.int(2 | HAS_TAG);
                    self.sym("names");
                    let names = items
                        .iter()
                        .map(|(n, _)| n.clone().unwrap_or_default())
                        .collect();
                    self.item(&RObj::Str(names));
                    self.int(NILVALUE);
                }
            }
        }
    }
}

/// `serialize(obj, NULL, version = 3)`.
pub fn serialize(obj: &RObj) -> Vec<u8> {
    let mut w = Writer {
        out: b"X\n".to_vec(),
        syms: Vec::new(),
    };
    w.int(3);
    w.int(0x0004_0202);
    w.int(0x0003_0500);
    w.int(5);
    w.out.extend_from_slice(b"UTF-8");
    w.item(obj);
    w.out
}

pub fn sym(s: &str) -> RObj {
    RObj::Sym(s.into())
}

pub fn call(f: &str, args: Vec<RObj>) -> RObj {
    let mut v = vec![(None, sym(f))];
    v.extend(args.into_iter().map(|a| (None, a)));
    RObj::Lang(v)
}

/// A task payload in the plain form `serialize(list(expr, args))` (the R
/// package sends another; see `host/PROTOCOL.md`).
pub fn task(expr: RObj, args: Vec<(&str, RObj)>) -> Vec<u8> {
    let args = if args.is_empty() {
        RObj::Null
    } else {
        RObj::List(
            args.into_iter()
                .map(|(k, v)| (Some(k.to_string()), v))
                .collect(),
        )
    };
    serialize(&RObj::List(vec![(None, expr), (None, args)]))
}

/// A task evaluating R source text: `eval(parse(text = code))`.
#[cfg(any(test, feature = "test-support"))]
pub fn code_task(code: &str) -> Vec<u8> {
    let parse = RObj::Lang(vec![
        (None, sym("parse")),
        (Some("text".into()), RObj::Str(vec![code.into()])),
    ]);
    task(call("eval", vec![parse]), vec![])
}

/// `x + 1` with `x = v`: the trivial task of tests and benchmarks.
pub fn plus_one(v: f64) -> Vec<u8> {
    task(
        call("+", vec![sym("x"), RObj::Real(vec![1.0])]),
        vec![("x", RObj::Real(vec![v]))],
    )
}

/// A value read back.
#[derive(Clone, Debug, PartialEq)]
pub enum RVal {
    Null,
    Sym(String),
    Real(Vec<f64>),
    Int(Vec<i32>),
    Lgl(Vec<i32>),
    Str(Vec<Option<String>>),
    List(Vec<RVal>),
    Raw(Vec<u8>),
    Pairlist(Vec<(Option<String>, RVal)>),
    /// An environment or other reference-like item, by its type code.
    Special(i32),
}

/// A value and its attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub val: RVal,
    pub attrs: Vec<(String, RVal)>,
}

impl Value {
    #[cfg(any(test, feature = "test-support"))]
    pub fn attr(&self, name: &str) -> Option<&RVal> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// A double scalar, if that is what it is.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.val {
            RVal::Real(v) if v.len() == 1 => Some(v[0]),
            RVal::Int(v) if v.len() == 1 => Some(v[0] as f64),
            _ => None,
        }
    }
    #[cfg(any(test, feature = "test-support"))]
    pub fn as_str(&self) -> Option<&str> {
        match &self.val {
            RVal::Str(v) if v.len() == 1 => v[0].as_deref(),
            _ => None,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    refs: Vec<RVal>,
    depth: usize,
}

type R<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.b.len() < n {
            return Err("truncated".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn int(&mut self) -> R<i32> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn len(&mut self) -> R<usize> {
        let n = self.int()?;
        if n == -1 {
            let hi = self.int()? as u64;
            let lo = self.int()? as u32 as u64;
            return Ok(((hi << 32) | lo) as usize);
        }
        usize::try_from(n).map_err(|_| "negative length".to_string())
    }
    fn charsxp(&mut self) -> R<Option<String>> {
        let flags = self.int()?;
        if flags & 0xff != 9 {
            return Err(format!("expected CHARSXP, got type {}", flags & 0xff));
        }
        let n = self.int()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| "bad string length")?;
        Ok(Some(String::from_utf8_lossy(self.take(n)?).into_owned()))
    }
    fn attrs(&mut self, has: bool) -> R<Vec<(String, RVal)>> {
        if !has {
            return Ok(vec![]);
        }
        match self.item()?.val {
            RVal::Pairlist(v) => Ok(v
                .into_iter()
                .map(|(k, v)| (k.unwrap_or_default(), v))
                .collect()),
            RVal::Null => Ok(vec![]),
            _ => Err("attributes are not a pairlist".into()),
        }
    }
    fn item(&mut self) -> R<Value> {
        self.depth += 1;
        if self.depth > 200 {
            return Err("nested too deep".into());
        }
        let r = self.item_inner();
        self.depth -= 1;
        r
    }
    fn item_inner(&mut self) -> R<Value> {
        let flags = self.int()?;
        let ty = flags & 0xff;
        let has_attr = flags & HAS_ATTR != 0;
        let has_tag = flags & HAS_TAG != 0;
        let _ = flags & IS_OBJECT;
        let plain = |val| Ok(Value { val, attrs: vec![] });
        match ty {
            254 => plain(RVal::Null),
            242 | 241 | 253 | 251 | 252 | 250 => plain(RVal::Special(ty)),
            255 => {
                let mut i = flags >> 8;
                if i == 0 {
                    i = self.int()?;
                }
                let v = self
                    .refs
                    .get((i as usize).wrapping_sub(1))
                    .cloned()
                    .ok_or("bad reference")?;
                plain(v)
            }
            1 => {
                let name = self.charsxp()?.unwrap_or_default();
                let v = RVal::Sym(name);
                self.refs.push(v.clone());
                plain(v)
            }
            2 | 6 | 17 => {
                // Pairlist-like cells, possibly a long chain: iterate.
                let mut items = Vec::new();
                let mut attrs = self.attrs(has_attr)?;
                let mut tag_flag = has_tag;
                loop {
                    let tag = if tag_flag {
                        match self.item()?.val {
                            RVal::Sym(s) => Some(s),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    items.push((tag, self.item()?.val));
                    let next = self.int()?;
                    let nty = next & 0xff;
                    if nty == 254 {
                        break;
                    }
                    if nty != 2 && nty != 6 {
                        return Err(format!("unexpected pairlist tail type {nty}"));
                    }
                    if next & HAS_ATTR != 0 {
                        attrs.extend(self.attrs(true)?);
                    }
                    tag_flag = next & HAS_TAG != 0;
                }
                Ok(Value {
                    val: RVal::Pairlist(items),
                    attrs,
                })
            }
            9 => Err("bare CHARSXP".into()),
            10 | 13 => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.int()?);
                }
                let attrs = self.attrs(has_attr)?;
                let val = if ty == 10 { RVal::Lgl(v) } else { RVal::Int(v) };
                Ok(Value { val, attrs })
            }
            14 => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    let s = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    v.push(f64::from_be_bytes(a));
                }
                let attrs = self.attrs(has_attr)?;
                Ok(Value {
                    val: RVal::Real(v),
                    attrs,
                })
            }
            16 => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.charsxp()?);
                }
                let attrs = self.attrs(has_attr)?;
                Ok(Value {
                    val: RVal::Str(v),
                    attrs,
                })
            }
            19 | 20 => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.item()?.val);
                }
                let attrs = self.attrs(has_attr)?;
                Ok(Value {
                    val: RVal::List(v),
                    attrs,
                })
            }
            24 => {
                let n = self.len()?;
                let v = self.take(n)?.to_vec();
                let attrs = self.attrs(has_attr)?;
                Ok(Value {
                    val: RVal::Raw(v),
                    attrs,
                })
            }
            t => Err(format!("unsupported SEXP type {t}")),
        }
    }
}

/// `unserialize()` for the simple values above.
pub fn unserialize(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader {
        b: bytes,
        refs: Vec::new(),
        depth: 0,
    };
    if r.take(2)? != b"X\n" {
        return Err("not XDR serialization".into());
    }
    let version = r.int()?;
    r.int()?;
    r.int()?;
    if version == 3 {
        let n = r.len()?;
        r.take(n)?;
    } else if version != 2 {
        return Err(format!("serialization version {version}"));
    }
    r.item()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_r_writes() {
        // From R 4.2.2: serialize(list(quote(x + 1), list(x = 41)), NULL, version = 3)
        let expected = "580a000000030004020200030500000000055554462d380000001300000002000000060000000100040009000000012b0000000200000001000400090000000178000000020000000e000000013ff0000000000000000000fe00000213000000010000000e000000014044800000000000000004020000000100040009000000056e616d65730000001000000001000400090000000178000000fe";
        let got = hex::encode(plus_one(41.0));
        assert_eq!(got, expected);
        // serialize(list(quote(eval(parse(text = "1"))), NULL), NULL, version = 3)
        let expected = "580a000000030004020200030500000000055554462d380000001300000002000000060000000100040009000000046576616c0000000200000006000000010004000900000005706172736500000402000000010004000900000004746578740000001000000001000400090000000131000000fe000000fe000000fe";
        assert_eq!(hex::encode(code_task("1")), expected);
    }

    #[test]
    fn reads_back() {
        let v = unserialize(&serialize(&RObj::Real(vec![42.0]))).unwrap();
        assert_eq!(v.as_f64(), Some(42.0));
        let l = RObj::List(vec![
            (Some("a".into()), RObj::Str(vec!["é".into()])),
            (Some("b".into()), RObj::Null),
        ]);
        let v = unserialize(&serialize(&l)).unwrap();
        assert_eq!(
            v.attr("names"),
            Some(&RVal::Str(vec![Some("a".into()), Some("b".into())]))
        );
        let v = unserialize(&plus_one(1.0)).unwrap();
        assert!(matches!(v.val, RVal::List(ref items) if items.len() == 2));
        assert!(unserialize(b"X\n").is_err());
        assert!(unserialize(&[]).is_err());
    }
}
