//! The result verifier: a streaming check of R's serialization format (XDR,
//! versions 2 and 3) that admits a documented safe subset and refuses the
//! rest, so that nothing a sandbox or a volunteer's daemon sends can run
//! code in, or crash, the R session that unserializes it.
//!
//! Iterative (an explicit stack on the heap, at most [`MAX_DEPTH`] frames),
//! never panics, checks every length against the bytes that remain, and
//! allocates at most a small multiple of the input. The subset is listed in
//! host/PROTOCOL.md ("Results: the safe subset").

use crate::protocol::{FailKind, Outcome};
use std::fmt;
use std::ops::Range;

/// Deepest nesting admitted. Every nested item and every pairlist/call cell
/// of a CDR chain counts one level, because R's `ReadItem` recurses on both;
/// native R 4.2 unserializes this depth on an 8 MiB C stack with room to
/// spare (tested), while ~100,000 levels overflow it.
pub const MAX_DEPTH: usize = 5000;

/// The namespaces (and `package:` environments) a result may refer to: base
/// R's own. Unserializing such a reference makes R load the namespace, so
/// any other name would load an arbitrary installed package in the client.
pub const NAMESPACES: &[&str] = &[
    "base",
    "compiler",
    "datasets",
    "graphics",
    "grDevices",
    "grid",
    "methods",
    "parallel",
    "splines",
    "stats",
    "stats4",
    "tools",
    "utils",
];

/// Longest primitive name admitted (R's longest is 20 bytes).
const MAX_PRIM_NAME: usize = 64;

/// Base R's primitives (R 4.2 and 4.6), the only names a SPECIALSXP/BUILTINSXP may
/// carry: R resolves the name in its internal function table, which also
/// holds `.Internal`s that must not become callable objects.
const PRIMITIVES: &[&str] = &[
    "-",
    ":",
    "::",
    ":::",
    "!",
    "!=",
    "...elt",
    "...length",
    "...names",
    ".C",
    ".cache_class",
    ".Call",
    ".Call.graphics",
    ".class2",
    ".External",
    ".External.graphics",
    ".External2",
    ".Fortran",
    ".Internal",
    ".isMethodsDispatchOn",
    ".Primitive",
    ".primTrace",
    ".primUntrace",
    ".subset",
    ".subset2",
    "(",
    "[",
    "[[",
    "[[<-",
    "[<-",
    "{",
    "@",
    "@<-",
    "*",
    "/",
    "&",
    "&&",
    "%*%",
    "%/%",
    "%%",
    "^",
    "+",
    "<",
    "<-",
    "<<-",
    "<=",
    "=",
    "==",
    ">",
    ">=",
    "|",
    "||",
    "~",
    "$",
    "$<-",
    "abs",
    "acos",
    "acosh",
    "all",
    "any",
    "anyNA",
    "Arg",
    "as.call",
    "as.character",
    "as.complex",
    "as.double",
    "as.environment",
    "as.integer",
    "as.logical",
    "as.numeric",
    "as.raw",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "attr",
    "attr<-",
    "attributes",
    "attributes<-",
    "baseenv",
    "break",
    "browser",
    "c",
    "call",
    "ceiling",
    "class",
    "class<-",
    "Conj",
    "cos",
    "cosh",
    "cospi",
    "cummax",
    "cummin",
    "cumprod",
    "cumsum",
    "digamma",
    "dim",
    "dim<-",
    "dimnames",
    "dimnames<-",
    "emptyenv",
    "enc2native",
    "enc2utf8",
    "environment<-",
    "exp",
    "expm1",
    "expression",
    "floor",
    "for",
    "forceAndCall",
    "function",
    "gamma",
    "gc.time",
    "globalenv",
    "if",
    "Im",
    "interactive",
    "invisible",
    "is.array",
    "is.call",
    "is.character",
    "is.complex",
    "is.double",
    "is.environment",
    "is.finite",
    "is.function",
    "is.infinite",
    "is.integer",
    "is.language",
    "is.list",
    "is.logical",
    "is.matrix",
    "is.na",
    "is.name",
    "is.nan",
    "is.null",
    "is.numeric",
    "is.object",
    "is.pairlist",
    "is.raw",
    "is.single",
    "is.symbol",
    "isS4",
    "lazyLoadDBfetch",
    "length",
    "length<-",
    "levels<-",
    "lgamma",
    "list",
    "log10",
    "log1p",
    "log2",
    "max",
    "min",
    "missing",
    "Mod",
    "names",
    "names<-",
    "nargs",
    "next",
    "nzchar",
    "oldClass",
    "oldClass<-",
    "on.exit",
    "pos.to.env",
    "proc.time",
    "prod",
    "quote",
    "range",
    "Re",
    "rep",
    "repeat",
    "retracemem",
    "return",
    "round",
    "seq_along",
    "seq_len",
    "sign",
    "signif",
    "sin",
    "sinh",
    "sinpi",
    "sqrt",
    "standardGeneric",
    "storage.mode<-",
    "substitute",
    "sum",
    "switch",
    "tan",
    "tanh",
    "tanpi",
    "tracemem",
    "trigamma",
    "trunc",
    "unclass",
    "untracemem",
    "UseMethod",
    "while",
    "xtfrm",
    // R 4.6 (the sandbox's R, checked with `hako eval`)
    "crossprod",
    "declare",
    "Exec",
    "Tailcall",
    "tcrossprod",
    "unCfillPOSIXlt",
    "log",
];

/// Why a result was refused; `Display` is the reason a user reads after
/// "result refused: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A length or the value itself runs past the end of the payload.
    Truncated,
    /// Bytes follow the value.
    Trailing,
    /// Not R's XDR serialization format (version 2 or 3).
    Header(&'static str),
    TooDeep,
    Promise,
    ActiveBinding,
    ByteCode,
    ExternalPointer,
    WeakReference,
    Persistent,
    Dots,
    /// A type code outside the subset.
    UnknownType(u32),
    /// A namespace or package environment outside [`NAMESPACES`].
    Namespace(String),
    /// An ALTREP class outside base R's own, or one with malformed state.
    Altrep(String),
    Primitive(String),
    /// Any other structural lie, described.
    Malformed(&'static str),
    /// An attribute of the wrong type or length.
    Attribute {
        name: &'static str,
        why: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Truncated => f.write_str("the serialized value is truncated (a length runs past the payload)"),
            Refusal::Trailing => f.write_str("bytes follow the serialized value"),
            Refusal::Header(why) => write!(f, "not R's XDR serialization format: {why}"),
            Refusal::TooDeep => write!(
                f,
                "it is nested deeper than {MAX_DEPTH} levels (each list element level and each pairlist cell counts), which could overflow R's C stack"
            ),
            Refusal::Promise => f.write_str("a promise (delayedAssign) would run code when read"),
            Refusal::ActiveBinding => f.write_str(
                "an environment holds an active or special binding (makeActiveBinding), which would run code when read",
            ),
            Refusal::ByteCode => f.write_str("it contains byte code, which R does not check and could crash R"),
            Refusal::ExternalPointer => f.write_str("it contains an external pointer (memory of another process)"),
            Refusal::WeakReference => f.write_str("it contains a weak reference (its finalizer would run code)"),
            Refusal::Persistent => f.write_str("it contains a persistent reference (a refhook would run code when read)"),
            Refusal::Dots => f.write_str("it contains a '...' object"),
            Refusal::UnknownType(t) => write!(f, "it contains an object of unsupported type {t}"),
            Refusal::Namespace(n) => write!(
                f,
                "it refers to namespace or package '{n}', which is not one of base R's (reading it would load that package's code)"
            ),
            Refusal::Altrep(why) => write!(f, "ALTREP object refused: {why}"),
            Refusal::Primitive(n) => write!(f, "'{n}' is not one of base R's primitive functions"),
            Refusal::Malformed(why) => f.write_str(why),
            Refusal::Attribute { name, why } => write!(f, "attribute '{name}' {why}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// A daemon's outcome as a client may see it: a value or error value that
/// fails [`verify`] becomes a `Refused` failure and its bytes are dropped.
pub fn checked(outcome: Outcome) -> Outcome {
    if let Outcome::Value(b) | Outcome::Error(b) = &outcome {
        if let Err(r) = verify(b) {
            tracing::warn!(reason = %r, bytes = b.len(), "result refused");
            return Outcome::Failed {
                kind: FailKind::Refused,
                message: format!("result refused: {r}"),
            };
        }
    }
    outcome
}

/// Checks that `bytes` is one R value in the safe subset.
pub fn verify(bytes: &[u8]) -> Result<(), Refusal> {
    let mut v = Verifier {
        input: Input { b: bytes, pos: 0 },
        refs: Vec::new(),
        accs: Vec::new(),
        dimnames: Vec::new(),
        stack: Vec::new(),
    };
    v.header()?;
    v.run()?;
    if v.input.pos != bytes.len() {
        return Err(Refusal::Trailing);
    }
    Ok(())
}

// SEXPTYPE codes and the serializer's pseudo types (serialize.c).
const SYMSXP: u8 = 1;
const LISTSXP: u8 = 2;
const CLOSXP: u8 = 3;
const ENVSXP: u8 = 4;
const PROMSXP: u8 = 5;
const LANGSXP: u8 = 6;
const SPECIALSXP: u8 = 7;
const BUILTINSXP: u8 = 8;
const CHARSXP: u8 = 9;
const LGLSXP: u8 = 10;
const INTSXP: u8 = 13;
const REALSXP: u8 = 14;
const CPLXSXP: u8 = 15;
const STRSXP: u8 = 16;
const DOTSXP: u8 = 17;
const VECSXP: u8 = 19;
const EXPRSXP: u8 = 20;
const BCODESXP: u8 = 21;
const EXTPTRSXP: u8 = 22;
const WEAKREFSXP: u8 = 23;
const RAWSXP: u8 = 24;
const S4SXP: u8 = 25;
const ALTREP_SXP: u8 = 238;
const ATTRLISTSXP: u8 = 239;
const ATTRLANGSXP: u8 = 240;
const BASEENV_SXP: u8 = 241;
const EMPTYENV_SXP: u8 = 242;
const BCREPREF: u8 = 243;
const BCREPDEF: u8 = 244;
const GENERICREFSXP: u8 = 245;
const CLASSREFSXP: u8 = 246;
const PERSISTSXP: u8 = 247;
const PACKAGESXP: u8 = 248;
const NAMESPACESXP: u8 = 249;
const BASENAMESPACE_SXP: u8 = 250;
const MISSINGARG_SXP: u8 = 251;
const UNBOUNDVALUE_SXP: u8 = 252;
const GLOBALENV_SXP: u8 = 253;
const NILVALUE_SXP: u8 = 254;
const REFSXP: u8 = 255;

/// gp bit of a binding cell that makes it active (memory.h); the lock bit
/// (1 << 14) is harmless and written by R for locked bindings.
const ACTIVE_BINDING_MASK: u32 = 1 << 15;
/// R_XLEN_T_MAX: the longest vector R can have.
const MAX_XLEN: u64 = (1 << 52) - 1;
const NA_INTEGER: i32 = i32::MIN;

#[derive(Clone, Copy)]
struct Flags {
    raw: u32,
    ty: u8,
    levs: u32,
    attr: bool,
    tag: bool,
}

impl Flags {
    fn parse(raw: i32) -> Result<Flags, Refusal> {
        let raw = raw as u32;
        if raw & 0xff != REFSXP as u32 && raw & (1 << 11) != 0 {
            return Err(Refusal::Malformed(
                "an item's flags have an unknown bit set",
            ));
        }
        Ok(Flags {
            raw,
            ty: (raw & 0xff) as u8,
            levs: raw >> 12,
            attr: raw & (1 << 9) != 0,
            tag: raw & (1 << 10) != 0,
        })
    }
}

struct Input<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: u64) -> Result<Range<usize>, Refusal> {
        if n > self.remaining() as u64 {
            return Err(Refusal::Truncated);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(start..self.pos)
    }
    fn int(&mut self) -> Result<i32, Refusal> {
        let r = self.take(4)?;
        let b = &self.b[r];
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A vector length: an int, or -1 then two ints for a long vector.
    fn length(&mut self) -> Result<u64, Refusal> {
        let n = self.int()?;
        let n = if n == -1 {
            let hi = self.int()?;
            let lo = self.int()?;
            if hi < 0 || lo < 0 {
                return Err(Refusal::Malformed("a long vector has a negative length"));
            }
            ((hi as u64) << 32) + lo as u64
        } else if n < 0 {
            return Err(Refusal::Malformed("a vector has a negative length"));
        } else {
            n as u64
        };
        if n > MAX_XLEN {
            return Err(Refusal::Malformed("a vector is longer than R allows"));
        }
        Ok(n)
    }
    /// `n` elements of `width` bytes, checked against what remains.
    fn elements(&mut self, n: u64, width: u64) -> Result<Range<usize>, Refusal> {
        let bytes = n.checked_mul(width).ok_or(Refusal::Truncated)?;
        self.take(bytes)
    }
    /// Each of `n` items needs at least 4 bytes: refuse a count that cannot fit.
    fn room_for(&self, n: u64) -> Result<(), Refusal> {
        if n > (self.remaining() / 4) as u64 {
            return Err(Refusal::Truncated);
        }
        Ok(())
    }
    fn int_at(&self, off: usize, i: u64) -> i32 {
        let p = off + 4 * i as usize;
        match self.b.get(p..p + 4) {
            Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => NA_INTEGER,
        }
    }
    fn real_at(&self, off: usize, i: u64) -> f64 {
        let p = off + 8 * i as usize;
        match self.b.get(p..p + 8) {
            Some(b) => f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => f64::NAN,
        }
    }
}

/// The integer values of an INTSXP, where a check needs them.
#[derive(Clone, Copy, Debug)]
enum Ints {
    None,
    /// `n` big-endian ints at this offset of the input.
    Data(usize),
    /// A compact sequence.
    Seq {
        n1: i64,
        inc: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nil,
    Missing,
    Unbound,
    Env,
    Sym,
    /// A vector of this SEXPTYPE.
    Vector(u8),
    /// A pairlist, call or closure: never a vector for attribute checks.
    Other,
}

/// What a parent needs to know of a finished item.
#[derive(Clone, Copy, Debug)]
struct Sum {
    kind: Kind,
    len: u64,
    ints: Ints,
    /// STRSXP: holds an NA; holds "factor".
    str_na: bool,
    factor: bool,
    /// A symbol's name in the input.
    name: (usize, usize),
    /// VECSXP read as `dimnames`: index into `Verifier::dimnames`.
    dn: usize,
    /// REALSXP read as data: where its doubles are.
    reals: Option<usize>,
}

impl Sum {
    fn of(kind: Kind) -> Sum {
        Sum {
            kind,
            len: 0,
            ints: Ints::None,
            str_na: false,
            factor: false,
            name: (0, 0),
            dn: usize::MAX,
            reals: None,
        }
    }
    fn vector(ty: u8, len: u64) -> Sum {
        Sum {
            len,
            ..Sum::of(Kind::Vector(ty))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttrName {
    Names,
    Dim,
    Dimnames,
    Class,
    Levels,
    RowNames,
    Tsp,
    Other,
}

impl AttrName {
    fn of(name: &[u8]) -> AttrName {
        match name {
            b"names" => AttrName::Names,
            b"dim" => AttrName::Dim,
            b"dimnames" => AttrName::Dimnames,
            b"class" => AttrName::Class,
            b"levels" => AttrName::Levels,
            b"row.names" => AttrName::RowNames,
            b"tsp" => AttrName::Tsp,
            _ => AttrName::Other,
        }
    }
    fn text(self) -> &'static str {
        match self {
            AttrName::Names => "names",
            AttrName::Dim => "dim",
            AttrName::Dimnames => "dimnames",
            AttrName::Class => "class",
            AttrName::Levels => "levels",
            AttrName::RowNames => "row.names",
            AttrName::Tsp => "tsp",
            AttrName::Other => "?",
        }
    }
}

/// What the item about to be read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Any value of the subset.
    Any,
    /// A binding's value in an environment frame (may be R_UnboundValue).
    Binding,
    /// A list read as the value of `dimnames`.
    Dimnames,
    Sym,
    /// A closure's environment.
    Env,
    /// An environment's enclosure.
    Enclos,
    /// The attributes announced by an item's flags: a tagged pairlist.
    Attrs,
    /// An environment's or ALTREP object's attributes: NULL or a tagged pairlist.
    AttrsOrNil,
    /// The rest of a chain: NULL or the next cell.
    Cdr(Chain),
    /// An environment's frame: NULL or a chain of bindings.
    Frame,
    Hashtab,
    Formals,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chain {
    /// A pairlist or call: tags optional, any values.
    Plain,
    /// Attributes: tagged, values collected for the owner's checks.
    Attr,
    /// Bindings: tagged, no active bindings.
    Frame,
    /// A closure's formals: tagged.
    Formals,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Altrep {
    IntSeq,
    RealSeq,
    Deferred,
    Wrap(u8),
}

/// One item being read; `step` counts the children read so far.
#[derive(Debug)]
enum Frame {
    /// The whole value.
    Top {
        done: bool,
    },
    /// A vector whose data is read, waiting for its attributes.
    Attrs {
        sum: Sum,
        done: bool,
    },
    /// VECSXP/EXPRSXP (or a `dimnames` list): elements, then attributes.
    List {
        sum: Sum,
        i: u64,
        attr: bool,
        attr_done: bool,
    },
    /// A cell of a chain (or a call, or a closure).
    Cell {
        chain: Chain,
        ty: u8,
        step: u8,
        attr: bool,
        tag: bool,
        name: AttrName,
    },
    Env {
        step: u8,
        /// Its index in the reference table.
        id: usize,
    },
    Hashtab {
        n: u64,
        i: u64,
    },
    Altrep {
        class: Altrep,
        step: u8,
        sum: Sum,
    },
}

#[derive(Clone, Copy)]
enum Ref {
    Sym((usize, usize)),
    /// `enclosed`: its enclosure has been read. An enclosure may only be an
    /// environment whose own enclosure is read, so no chain of enclosures
    /// loops (R's variable lookup would never end).
    Env {
        enclosed: bool,
    },
}

struct Verifier<'a> {
    input: Input<'a>,
    refs: Vec<Ref>,
    /// Attributes collected for the owners being read, innermost last.
    accs: Vec<Vec<(AttrName, Sum)>>,
    /// Per `dimnames` list: each element's length, `None` for NULL.
    dimnames: Vec<Vec<Option<u64>>>,
    stack: Vec<Frame>,
}

/// The next thing a frame needs.
enum Next {
    Child(Role),
    Done(Sum),
}

impl<'a> Verifier<'a> {
    fn header(&mut self) -> Result<(), Refusal> {
        let magic = self
            .input
            .take(2)
            .map_err(|_| Refusal::Header("too short"))?;
        if &self.input.b[magic] != b"X\n" {
            return Err(Refusal::Header("it does not start with \"X\\n\" (XDR)"));
        }
        let version = self.input.int()?;
        self.input.int()?; // the writer's R version
        self.input.int()?; // the minimal reader version
        match version {
            2 => {}
            3 => {
                let n = self.input.int()?;
                if !(0..=64).contains(&n) {
                    return Err(Refusal::Header("the native encoding name has a bad length"));
                }
                self.input.take(n as u64)?;
            }
            _ => return Err(Refusal::Header("only versions 2 and 3 are read")),
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), Refusal> {
        self.stack.push(Frame::Top { done: false });
        let mut last: Option<Sum> = None;
        while let Some(mut frame) = self.stack.pop() {
            let next = self.step(&mut frame, last.take())?;
            match next {
                Next::Done(sum) => last = Some(sum),
                Next::Child(role) => {
                    self.stack.push(frame);
                    last = self.item(role)?;
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, f: Frame) -> Result<Option<Sum>, Refusal> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Refusal::TooDeep);
        }
        self.stack.push(f);
        Ok(None)
    }

    /// Advances `frame` with the summary of the child it asked for last
    /// (`None` on its first step).
    fn step(&mut self, frame: &mut Frame, child: Option<Sum>) -> Result<Next, Refusal> {
        match frame {
            Frame::Top { done } => {
                if *done {
                    return Ok(Next::Done(Sum::of(Kind::Nil)));
                }
                *done = true;
                Ok(Next::Child(Role::Any))
            }
            Frame::Attrs { sum, done } => {
                if !*done {
                    *done = true;
                    self.accs.push(Vec::new());
                    return Ok(Next::Child(Role::Attrs));
                }
                self.close_attrs(sum)?;
                Ok(Next::Done(*sum))
            }
            Frame::List {
                sum,
                i,
                attr,
                attr_done,
            } => {
                if let Some(c) = child {
                    if *i <= sum.len && !*attr_done && sum.dn != usize::MAX {
                        let e = match c.kind {
                            Kind::Nil => None,
                            Kind::Vector(STRSXP) => Some(c.len),
                            _ => return Err(Refusal::Attribute {
                                name: "dimnames",
                                why: "holds an element that is neither NULL nor a character vector",
                            }),
                        };
                        if let Some(d) = self.dimnames.get_mut(sum.dn) {
                            d.push(e);
                        }
                    }
                }
                if *attr_done {
                    self.close_attrs(sum)?;
                    return Ok(Next::Done(*sum));
                }
                if *i < sum.len {
                    *i += 1;
                    return Ok(Next::Child(Role::Any));
                }
                if *attr {
                    *attr_done = true;
                    self.accs.push(Vec::new());
                    return Ok(Next::Child(Role::Attrs));
                }
                Ok(Next::Done(*sum))
            }
            Frame::Cell {
                chain,
                ty,
                step,
                attr,
                tag,
                name,
            } => self.step_cell(*chain, *ty, step, *attr, *tag, name, child),
            Frame::Env { step, id } => {
                *step += 1;
                match *step {
                    1 => Ok(Next::Child(Role::Enclos)),
                    2 => {
                        if let Some(Ref::Env { enclosed }) = self.refs.get_mut(*id) {
                            *enclosed = true;
                        }
                        Ok(Next::Child(Role::Frame))
                    }
                    3 => Ok(Next::Child(Role::Hashtab)),
                    4 => {
                        self.accs.push(Vec::new());
                        Ok(Next::Child(Role::AttrsOrNil))
                    }
                    _ => {
                        let sum = Sum::of(Kind::Env);
                        self.close_attrs(&sum)?;
                        Ok(Next::Done(sum))
                    }
                }
            }
            Frame::Hashtab { n, i } => {
                if *i < *n {
                    *i += 1;
                    return Ok(Next::Child(Role::Frame));
                }
                Ok(Next::Done(Sum::vector(VECSXP, *n)))
            }
            Frame::Altrep { class, step, sum } => self.step_altrep(*class, step, sum, child),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_cell(
        &mut self,
        chain: Chain,
        ty: u8,
        step: &mut u8,
        attr: bool,
        tag: bool,
        name: &mut AttrName,
        child: Option<Sum>,
    ) -> Result<Next, Refusal> {
        // steps: 0 attr, 1 tag, 2 car, 3 cdr, 4 done
        loop {
            let s = *step;
            *step += 1;
            match s {
                0 => {
                    if attr {
                        self.accs.push(Vec::new());
                        return Ok(Next::Child(Role::Attrs));
                    }
                }
                1 => {
                    if attr {
                        let owner = Sum::of(Kind::Other);
                        self.close_attrs(&owner)?;
                    }
                    if tag {
                        return Ok(Next::Child(if ty == CLOSXP {
                            Role::Env
                        } else {
                            Role::Sym
                        }));
                    }
                }
                2 => {
                    if tag && ty != CLOSXP {
                        if let Some(c) = child {
                            *name =
                                AttrName::of(self.input.b.get(c.name.0..c.name.1).unwrap_or(b""));
                        }
                    }
                    return Ok(Next::Child(match (ty, chain) {
                        (CLOSXP, _) => Role::Formals,
                        (_, Chain::Frame) => Role::Binding,
                        (_, Chain::Attr) if *name == AttrName::Dimnames => Role::Dimnames,
                        _ => Role::Any,
                    }));
                }
                3 => {
                    if chain == Chain::Attr {
                        if let (Some(c), Some(acc)) = (child, self.accs.last_mut()) {
                            if *name != AttrName::Other && acc.iter().any(|(n, _)| n == name) {
                                return Err(Refusal::Attribute {
                                    name: name.text(),
                                    why: "is given twice",
                                });
                            }
                            acc.push((*name, c));
                        }
                    }
                    return Ok(Next::Child(if ty == CLOSXP || ty == PROMSXP {
                        Role::Any
                    } else {
                        Role::Cdr(chain)
                    }));
                }
                _ => {
                    return Ok(Next::Done(Sum::of(Kind::Other)));
                }
            }
        }
    }

    fn step_altrep(
        &mut self,
        class: Altrep,
        step: &mut u8,
        sum: &mut Sum,
        child: Option<Sum>,
    ) -> Result<Next, Refusal> {
        *step += 1;
        match *step {
            1 => {
                // the state
                match class {
                    Altrep::IntSeq | Altrep::RealSeq => {
                        self.compact_state(class, sum)?;
                        self.accs.push(Vec::new());
                        *step = 2;
                        Ok(Next::Child(Role::AttrsOrNil))
                    }
                    Altrep::Deferred | Altrep::Wrap(_) => {
                        let f = Flags::parse(self.input.int()?)?;
                        if f.ty != LISTSXP || f.attr || f.tag || f.levs != 0 {
                            return Err(Refusal::Altrep("its state is not a pairlist cell".into()));
                        }
                        Ok(Next::Child(Role::Any))
                    }
                }
            }
            2 => {
                // the state's CAR has been read; its CDR follows inline
                let c = child.unwrap_or(Sum::of(Kind::Nil));
                match class {
                    Altrep::Deferred => {
                        if !matches!(c.kind, Kind::Vector(INTSXP) | Kind::Vector(REALSXP)) {
                            return Err(Refusal::Altrep(
                                "a deferred string's argument is not an integer or double vector"
                                    .into(),
                            ));
                        }
                        sum.len = c.len;
                        self.plain_int_vector(1)?;
                    }
                    Altrep::Wrap(ty) => {
                        if c.kind != Kind::Vector(ty) {
                            return Err(Refusal::Altrep(
                                "a wrapper holds a vector of another type".into(),
                            ));
                        }
                        sum.len = c.len;
                        sum.ints = c.ints;
                        sum.str_na = c.str_na;
                        sum.factor = c.factor;
                        // (sortedness, no-NA): claims R trusts for fast paths
                        let off = self.plain_int_vector(2)?;
                        let srt = self.input.int_at(off, 0);
                        let no_na = self.input.int_at(off, 1);
                        if !matches!(srt, NA_INTEGER | -2..=2) || !(0..=1).contains(&no_na) {
                            return Err(Refusal::Altrep(
                                "a wrapper's metadata is out of range".into(),
                            ));
                        }
                    }
                    _ => {}
                }
                self.accs.push(Vec::new());
                Ok(Next::Child(Role::AttrsOrNil))
            }
            _ => {
                self.close_attrs(sum)?;
                Ok(Next::Done(*sum))
            }
        }
    }

    /// An INTSXP of exactly `n` elements without attributes (ALTREP metadata).
    fn plain_int_vector(&mut self, n: u64) -> Result<usize, Refusal> {
        let f = Flags::parse(self.input.int()?)?;
        if f.ty != INTSXP || f.attr || self.input.length()? != n {
            return Err(Refusal::Altrep(format!(
                "its metadata is not an integer vector of length {n}"
            )));
        }
        Ok(self.input.elements(n, 4)?.start)
    }

    /// compact_intseq / compact_realseq: REAL state c(n, n1, inc).
    fn compact_state(&mut self, class: Altrep, sum: &mut Sum) -> Result<(), Refusal> {
        let f = Flags::parse(self.input.int()?)?;
        if f.ty != REALSXP || f.attr || self.input.length()? != 3 {
            return Err(Refusal::Altrep(
                "a compact sequence's state is not a double vector of length 3".into(),
            ));
        }
        let off = self.input.elements(3, 8)?.start;
        let (n, n1, inc) = (
            self.input.real_at(off, 0),
            self.input.real_at(off, 1),
            self.input.real_at(off, 2),
        );
        let whole = |x: f64| x.is_finite() && x.fract() == 0.0;
        if !whole(n) || !whole(n1) || !(inc == 1.0 || inc == -1.0) || n < 0.0 || n > MAX_XLEN as f64
        {
            return Err(Refusal::Altrep(
                "a compact sequence's state is malformed".into(),
            ));
        }
        if class == Altrep::IntSeq {
            let last = n1 + (n - 1.0).max(0.0) * inc;
            let ok = |x: f64| x > i32::MIN as f64 && x <= i32::MAX as f64;
            if !ok(n1) || !ok(last) {
                return Err(Refusal::Altrep(
                    "a compact integer sequence leaves the integer range".into(),
                ));
            }
            sum.ints = Ints::Seq {
                n1: n1 as i64,
                inc: inc as i64,
            };
        }
        sum.len = n as u64;
        Ok(())
    }

    /// Reads the flags of the next item and either returns its summary (a
    /// leaf) or pushes a frame for it.
    fn item(&mut self, role: Role) -> Result<Option<Sum>, Refusal> {
        let f = Flags::parse(self.input.int()?)?;
        match role {
            Role::Sym => {
                return match f.ty {
                    SYMSXP => self.symbol().map(Some),
                    REFSXP => match self.reference(f)? {
                        Ref::Sym(n) => Ok(Some(Sum {
                            name: n,
                            ..Sum::of(Kind::Sym)
                        })),
                        Ref::Env { .. } => {
                            Err(Refusal::Malformed("a tag is an environment, not a symbol"))
                        }
                    },
                    _ => Err(Refusal::Malformed("a tag is not a symbol")),
                }
            }
            Role::Env | Role::Enclos => {
                if role == Role::Enclos && f.ty == REFSXP {
                    return match self.reference(f)? {
                        Ref::Env { enclosed: true } => Ok(Some(Sum::of(Kind::Env))),
                        Ref::Env { enclosed: false } => Err(Refusal::Malformed(
                            "an environment encloses itself (R would look up names in it for ever)",
                        )),
                        Ref::Sym(_) => Err(Refusal::Malformed(
                            "an environment's place holds something else",
                        )),
                    };
                }
                return match f.ty {
                    ENVSXP | GLOBALENV_SXP | EMPTYENV_SXP | BASEENV_SXP | BASENAMESPACE_SXP
                    | NAMESPACESXP | PACKAGESXP | REFSXP => {
                        let s = self.any(f, role)?;
                        if let Some(s) = s {
                            if s.kind != Kind::Env {
                                return Err(Refusal::Malformed(
                                    "an environment's place holds something else",
                                ));
                            }
                        }
                        Ok(s)
                    }
                    _ => Err(Refusal::Malformed(
                        "a closure's or environment's enclosure is not an environment",
                    )),
                };
            }
            Role::Attrs | Role::AttrsOrNil => {
                if f.ty == NILVALUE_SXP && role == Role::AttrsOrNil {
                    return Ok(Some(Sum::of(Kind::Nil)));
                }
                return self.cell(f, Chain::Attr);
            }
            Role::Cdr(chain) => {
                if f.ty == NILVALUE_SXP {
                    return Ok(Some(Sum::of(Kind::Nil)));
                }
                return self.cell(f, chain);
            }
            Role::Frame => {
                if f.ty == NILVALUE_SXP {
                    return Ok(Some(Sum::of(Kind::Nil)));
                }
                return self.cell(f, Chain::Frame);
            }
            Role::Formals => {
                if f.ty == NILVALUE_SXP {
                    return Ok(Some(Sum::of(Kind::Nil)));
                }
                return self.cell(f, Chain::Formals);
            }
            Role::Hashtab => {
                if f.ty == NILVALUE_SXP {
                    return Ok(Some(Sum::of(Kind::Nil)));
                }
                if f.ty != VECSXP || f.attr {
                    return Err(Refusal::Malformed(
                        "an environment's hash table is not a list",
                    ));
                }
                let n = self.input.length()?;
                if n == 0 {
                    return Err(Refusal::Malformed("an environment's hash table is empty"));
                }
                self.input.room_for(n)?;
                return self.push(Frame::Hashtab { n, i: 0 });
            }
            Role::Any | Role::Binding | Role::Dimnames => {}
        }
        self.any(f, role)
    }

    /// A cell of `chain` (its flags read).
    fn cell(&mut self, f: Flags, chain: Chain) -> Result<Option<Sum>, Refusal> {
        if f.ty != LISTSXP {
            return Err(Refusal::Malformed(match chain {
                Chain::Attr => "attributes that are not a tagged pairlist",
                Chain::Frame => "an environment's frame is not a pairlist of bindings",
                Chain::Formals => "a closure's formals are not a pairlist",
                Chain::Plain => "a pairlist or call continues with something other than a pairlist",
            }));
        }
        self.cell_levels(f)?;
        if chain != Chain::Plain && (!f.tag || f.attr) {
            return Err(Refusal::Malformed(match chain {
                Chain::Attr => "an attribute without a name",
                Chain::Frame => "an environment binding without a name",
                _ => "a closure argument without a name",
            }));
        }
        self.push(Frame::Cell {
            chain,
            ty: LISTSXP,
            step: 0,
            attr: f.attr,
            tag: f.tag,
            name: AttrName::Other,
        })
    }

    fn cell_levels(&self, f: Flags) -> Result<(), Refusal> {
        if f.levs & ACTIVE_BINDING_MASK != 0 {
            return Err(Refusal::ActiveBinding);
        }
        if f.levs >= 1 << 16 {
            return Err(Refusal::Malformed("a pairlist cell has unknown bits set"));
        }
        Ok(())
    }

    /// One CHARSXP (a string's bytes, or `None` for NA), as symbols,
    /// namespace names and character vectors all hold them; `not_string` is
    /// the refusal when the item there is something else.
    fn string(&mut self, not_string: &'static str) -> Result<Option<Range<usize>>, Refusal> {
        let f = Flags::parse(self.input.int()?)?;
        if f.ty != CHARSXP || f.attr {
            return Err(Refusal::Malformed(not_string));
        }
        match self.input.int()? {
            -1 => Ok(None),
            n if n < 0 => Err(Refusal::Malformed("a string has a negative length")),
            n => Ok(Some(self.input.take(n as u64)?)),
        }
    }

    fn symbol(&mut self) -> Result<Sum, Refusal> {
        let r = self
            .string("a symbol's name is not a string")?
            .ok_or(Refusal::Malformed("a symbol's name is NA"))?;
        self.refs.push(Ref::Sym((r.start, r.end)));
        Ok(Sum {
            name: (r.start, r.end),
            ..Sum::of(Kind::Sym)
        })
    }

    /// A back reference: the index (1-based) is packed above the type byte,
    /// or follows when it does not fit.
    fn reference(&mut self, f: Flags) -> Result<Ref, Refusal> {
        let mut i = (f.raw >> 8) as u64;
        if i == 0 {
            let n = self.input.int()?;
            if n <= 0 {
                return Err(Refusal::Malformed("a reference index is out of range"));
            }
            i = n as u64;
        }
        match self.refs.get((i - 1) as usize) {
            Some(r) => Ok(*r),
            None => Err(Refusal::Malformed(
                "a reference points to an object not read yet",
            )),
        }
    }

    /// `InStringVec` of a namespace or package reference: its name must be
    /// one of [`NAMESPACES`].
    fn namespace(&mut self, ty: u8) -> Result<(), Refusal> {
        if self.input.int()? != 0 {
            return Err(Refusal::Malformed("a namespace reference is malformed"));
        }
        let n = self.input.length()?;
        if n == 0 || n > 16 {
            return Err(Refusal::Malformed("a namespace reference is malformed"));
        }
        let mut first: Option<Range<usize>> = None;
        for _ in 0..n {
            let r = self
                .string("a namespace reference is malformed")?
                .ok_or(Refusal::Malformed("a namespace reference names NA"))?;
            first.get_or_insert(r);
        }
        let name = &self.input.b[first.unwrap_or(0..0)];
        let bare = if ty == PACKAGESXP {
            name.strip_prefix(b"package:").unwrap_or(b"")
        } else {
            name
        };
        if !NAMESPACES.iter().any(|ns| ns.as_bytes() == bare) {
            return Err(Refusal::Namespace(shown(name)));
        }
        self.refs.push(Ref::Env { enclosed: true });
        Ok(())
    }

    /// An ALTREP object's class: the pairlist (class, package, type) read
    /// inline. Only base R's classes, and never mmap_*.
    fn altrep_class(&mut self) -> Result<(Altrep, u8), Refusal> {
        let malformed = || Refusal::Altrep("its class information is malformed".into());
        let mut syms = [(0usize, 0usize); 2];
        for s in syms.iter_mut() {
            let f = Flags::parse(self.input.int()?)?;
            if f.ty != LISTSXP || f.attr || f.tag {
                return Err(malformed());
            }
            let f = Flags::parse(self.input.int()?)?;
            *s = match f.ty {
                SYMSXP => self.symbol()?.name,
                REFSXP => match self.reference(f)? {
                    Ref::Sym(n) => n,
                    Ref::Env { .. } => return Err(malformed()),
                },
                _ => return Err(malformed()),
            };
        }
        let f = Flags::parse(self.input.int()?)?;
        if f.ty != LISTSXP || f.attr || f.tag {
            return Err(malformed());
        }
        let f = Flags::parse(self.input.int()?)?;
        if f.ty != INTSXP || f.attr || self.input.length()? != 1 {
            return Err(malformed());
        }
        let ty = self.input.int()?;
        if Flags::parse(self.input.int()?)?.ty != NILVALUE_SXP {
            return Err(malformed());
        }
        let b = self.input.b;
        let (class, pkg) = (&b[syms[0].0..syms[0].1], &b[syms[1].0..syms[1].1]);
        if pkg != b"base" {
            return Err(Refusal::Altrep(format!(
                "class '{}' of package '{}' is not one of base R's",
                shown(class),
                shown(pkg)
            )));
        }
        let (c, cty) = match class {
            b"compact_intseq" => (Altrep::IntSeq, INTSXP),
            b"compact_realseq" => (Altrep::RealSeq, REALSXP),
            b"deferred_string" => (Altrep::Deferred, STRSXP),
            b"wrap_integer" => (Altrep::Wrap(INTSXP), INTSXP),
            b"wrap_logical" => (Altrep::Wrap(LGLSXP), LGLSXP),
            b"wrap_real" => (Altrep::Wrap(REALSXP), REALSXP),
            b"wrap_complex" => (Altrep::Wrap(CPLXSXP), CPLXSXP),
            b"wrap_raw" => (Altrep::Wrap(RAWSXP), RAWSXP),
            b"wrap_string" => (Altrep::Wrap(STRSXP), STRSXP),
            b"wrap_list" => (Altrep::Wrap(VECSXP), VECSXP),
            c if c.starts_with(b"mmap_") => {
                return Err(Refusal::Altrep(format!(
                    "class '{}' maps a file on the reader's machine",
                    shown(c)
                )))
            }
            c => {
                return Err(Refusal::Altrep(format!(
                    "class '{}' is not one of base R's",
                    shown(c)
                )))
            }
        };
        if ty != cty as i32 {
            return Err(Refusal::Altrep("its class and type disagree".into()));
        }
        Ok((c, cty))
    }

    /// Any value of the subset (its flags read).
    fn any(&mut self, f: Flags, role: Role) -> Result<Option<Sum>, Refusal> {
        let leaf = |s: Sum| Ok(Some(s));
        match f.ty {
            NILVALUE_SXP => leaf(Sum::of(Kind::Nil)),
            MISSINGARG_SXP => leaf(Sum::of(Kind::Missing)),
            UNBOUNDVALUE_SXP => {
                if role == Role::Binding {
                    leaf(Sum::of(Kind::Unbound))
                } else {
                    Err(Refusal::Malformed(
                        "R's unbound-value marker outside an environment",
                    ))
                }
            }
            GLOBALENV_SXP | EMPTYENV_SXP | BASEENV_SXP | BASENAMESPACE_SXP => {
                leaf(Sum::of(Kind::Env))
            }
            REFSXP => match self.reference(f)? {
                Ref::Sym(n) => leaf(Sum {
                    name: n,
                    ..Sum::of(Kind::Sym)
                }),
                Ref::Env { .. } => leaf(Sum::of(Kind::Env)),
            },
            NAMESPACESXP | PACKAGESXP => {
                self.namespace(f.ty)?;
                leaf(Sum::of(Kind::Env))
            }
            ENVSXP => {
                self.input.int()?; // locked
                                   // R adds the environment to the reference table before its contents
                self.refs.push(Ref::Env { enclosed: false });
                self.push(Frame::Env {
                    step: 0,
                    id: self.refs.len() - 1,
                })
            }
            SYMSXP => self.symbol().map(Some),
            LISTSXP | LANGSXP | CLOSXP => {
                self.cell_levels(f)?;
                self.push(Frame::Cell {
                    chain: Chain::Plain,
                    ty: f.ty,
                    step: 0,
                    attr: f.attr,
                    tag: f.tag,
                    name: AttrName::Other,
                })
            }
            // A forced promise (no environment left, a value) is inert and is
            // what a closure's environment holds for its factory's arguments;
            // one with an environment would run its code when read.
            PROMSXP => {
                if role != Role::Binding || f.tag || f.attr {
                    return Err(Refusal::Promise);
                }
                self.push(Frame::Cell {
                    chain: Chain::Plain,
                    ty: PROMSXP,
                    step: 0,
                    attr: false,
                    tag: false,
                    name: AttrName::Other,
                })
            }
            DOTSXP => Err(Refusal::Dots),
            BCODESXP | ATTRLISTSXP | ATTRLANGSXP | BCREPREF | BCREPDEF => Err(Refusal::ByteCode),
            EXTPTRSXP => Err(Refusal::ExternalPointer),
            WEAKREFSXP => Err(Refusal::WeakReference),
            PERSISTSXP => Err(Refusal::Persistent),
            CLASSREFSXP | GENERICREFSXP => Err(Refusal::UnknownType(f.ty as u32)),
            CHARSXP => Err(Refusal::Malformed(
                "a bare string element (CHARSXP) outside a character vector",
            )),
            SPECIALSXP | BUILTINSXP => {
                let n = self.input.int()?;
                if n <= 0 || n as usize > MAX_PRIM_NAME {
                    return Err(Refusal::Malformed(
                        "a primitive function's name has a bad length",
                    ));
                }
                let r = self.input.take(n as u64)?;
                let name = &self.input.b[r];
                if !PRIMITIVES.iter().any(|p| p.as_bytes() == name) {
                    return Err(Refusal::Primitive(shown(name)));
                }
                self.with_attrs(f, Sum::of(Kind::Other))
            }
            S4SXP => self.with_attrs(f, Sum::of(Kind::Other)),
            LGLSXP | INTSXP | REALSXP | CPLXSXP | RAWSXP => {
                let n = self.input.length()?;
                let width = match f.ty {
                    REALSXP => 8,
                    CPLXSXP => 16,
                    RAWSXP => 1,
                    _ => 4,
                };
                let r = self.input.elements(n, width)?;
                let mut s = Sum::vector(f.ty, n);
                if f.ty == INTSXP {
                    s.ints = Ints::Data(r.start);
                }
                if f.ty == REALSXP {
                    s.reals = Some(r.start);
                }
                self.with_attrs(f, s)
            }
            STRSXP => {
                let n = self.input.length()?;
                self.input.room_for(n)?;
                let mut s = Sum::vector(STRSXP, n);
                for _ in 0..n {
                    match self.string("a character vector holds something other than strings")? {
                        None => s.str_na = true,
                        Some(r) => {
                            if &self.input.b[r] == b"factor" {
                                s.factor = true;
                            }
                        }
                    }
                }
                self.with_attrs(f, s)
            }
            VECSXP | EXPRSXP => {
                let n = self.input.length()?;
                self.input.room_for(n)?;
                let mut s = Sum::vector(f.ty, n);
                if role == Role::Dimnames && f.ty == VECSXP {
                    s.dn = self.dimnames.len();
                    self.dimnames.push(Vec::with_capacity(n.min(8) as usize));
                }
                self.push(Frame::List {
                    sum: s,
                    i: 0,
                    attr: f.attr,
                    attr_done: false,
                })
            }
            ALTREP_SXP => {
                if f.attr || f.tag {
                    return Err(Refusal::Altrep("its flags are malformed".into()));
                }
                let (class, ty) = self.altrep_class()?;
                self.push(Frame::Altrep {
                    class,
                    step: 0,
                    sum: Sum::vector(ty, 0),
                })
            }
            t => Err(Refusal::UnknownType(t as u32)),
        }
    }

    /// A leaf, or a frame that reads its attributes when its flags say so.
    fn with_attrs(&mut self, f: Flags, sum: Sum) -> Result<Option<Sum>, Refusal> {
        if f.attr {
            self.push(Frame::Attrs { sum, done: false })
        } else {
            Ok(Some(sum))
        }
    }

    fn int_value(&self, ints: Ints, i: u64) -> i32 {
        match ints {
            Ints::None => NA_INTEGER,
            Ints::Data(off) => self.input.int_at(off, i),
            Ints::Seq { n1, inc } => (n1 + inc * i as i64) as i32,
        }
    }

    /// Checks the attributes collected for `owner` (read in any order).
    fn close_attrs(&mut self, owner: &Sum) -> Result<(), Refusal> {
        let attrs = self.accs.pop().unwrap_or_default();
        let get = |n: AttrName| attrs.iter().find(|(a, _)| *a == n).map(|(_, s)| *s);
        let is_vec = matches!(owner.kind, Kind::Vector(_));
        let bad = |name: AttrName, why: &'static str| {
            Err(Refusal::Attribute {
                name: name.text(),
                why,
            })
        };
        use AttrName::*;
        if let Some(s) = get(Names) {
            if s.kind != Kind::Vector(STRSXP) {
                return bad(Names, "is not a character vector");
            }
            if is_vec && s.len != owner.len {
                return bad(Names, "does not have the length of the object");
            }
        }
        let dim = get(Dim);
        if let Some(s) = dim {
            if !is_vec {
                return bad(Dim, "is set on an object that is not a vector");
            }
            if s.kind != Kind::Vector(INTSXP) || s.len == 0 {
                return bad(Dim, "is not a non-empty integer vector");
            }
            if s.len > 1 << 16 {
                return bad(Dim, "has too many extents");
            }
            let mut prod: u64 = 1;
            for i in 0..s.len {
                let v = self.int_value(s.ints, i);
                if v < 0 {
                    return bad(Dim, "holds NA or a negative extent");
                }
                prod = prod.saturating_mul(v as u64);
            }
            if prod != owner.len {
                return bad(Dim, "does not match the object's length");
            }
        }
        if let Some(s) = get(Dimnames) {
            let Some(d) = dim else {
                return bad(Dimnames, "is set on an object without 'dim'");
            };
            let Some(elems) = (s.kind == Kind::Vector(VECSXP))
                .then(|| self.dimnames.get(s.dn))
                .flatten()
            else {
                return bad(Dimnames, "is not a list");
            };
            if elems.len() as u64 != d.len {
                return bad(Dimnames, "does not have one element per extent of 'dim'");
            }
            for (i, e) in elems.iter().enumerate() {
                if let Some(l) = e {
                    if *l != self.int_value(d.ints, i as u64) as u64 {
                        return bad(Dimnames, "has names of the wrong length for an extent");
                    }
                }
            }
        }
        let class = get(Class);
        if let Some(s) = class {
            if s.kind != Kind::Vector(STRSXP) || s.len == 0 || s.str_na {
                return bad(Class, "is not a character vector of length >= 1 without NA");
            }
        }
        let levels = get(Levels);
        if let Some(s) = levels {
            if s.kind != Kind::Vector(STRSXP) {
                return bad(Levels, "is not a character vector");
            }
        }
        if class.is_some_and(|c| c.factor) {
            if owner.kind != Kind::Vector(INTSXP) {
                return bad(
                    Class,
                    "says factor, but the object does not hold integer codes",
                );
            }
            let nlev = levels.map_or(0, |l| l.len);
            let ok = |v: i32| v == NA_INTEGER || (v >= 1 && v as u64 <= nlev);
            let codes_ok = match owner.ints {
                Ints::Seq { .. } => {
                    owner.len == 0
                        || (ok(self.int_value(owner.ints, 0))
                            && ok(self.int_value(owner.ints, owner.len - 1)))
                }
                _ => (0..owner.len).all(|i| ok(self.int_value(owner.ints, i))),
            };
            if !codes_ok {
                return bad(Levels, "has fewer levels than the factor's codes refer to");
            }
        }
        if let Some(s) = get(RowNames) {
            if !matches!(s.kind, Kind::Vector(STRSXP) | Kind::Vector(INTSXP)) {
                return bad(RowNames, "is not a character or integer vector");
            }
        }
        if let Some(s) = get(Tsp) {
            if s.kind != Kind::Vector(REALSXP) || s.len != 3 {
                return bad(Tsp, "is not a double vector of length 3");
            }
            // R's own check when it sets tsp: c(start, end, frequency) with
            // (end - start) * frequency + 1 rows
            if let (Some(off), true) = (s.reals, is_vec) {
                let (start, end, freq) = (
                    self.input.real_at(off, 0),
                    self.input.real_at(off, 1),
                    self.input.real_at(off, 2),
                );
                let rows = match dim {
                    Some(d) => self.int_value(d.ints, 0) as f64,
                    None => owner.len as f64,
                };
                let fits = freq > 0.0
                    && start.is_finite()
                    && end.is_finite()
                    && freq.is_finite()
                    && rows > 0.0
                    && (end - start - (rows - 1.0) / freq).abs() <= 1e-5;
                if !fits {
                    return bad(Tsp, "does not fit the series' length");
                }
            }
        }
        Ok(())
    }
}

/// A name from the input, as a user reads it (bounded, lossy).
fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests;
