//! `kscope symbolize --output json`: one record per address, in input
//! order, either resolved or saying why not.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One address of `kscope symbolize`. Untagged: a resolved address has
/// `symbol`, an unresolved one `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SymbolizeRecord<'a> {
    Resolved(ResolvedAddress<'a>),
    Unknown(UnknownAddress<'a>),
}

impl SymbolizeRecord<'_> {
    /// The address asked about.
    pub fn address(&self) -> HexAddress {
        match self {
            Self::Resolved(r) => r.address,
            Self::Unknown(u) => u.address,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedAddress<'a> {
    pub address: HexAddress,
    /// The symbol's name (demangled).
    pub symbol: Cow<'a, str>,
    /// Where the symbol starts.
    pub symbol_address: HexAddress,
    /// `address - symbol_address`.
    pub offset: u64,
    /// Null when the symbol table does not say (kallsyms never does).
    pub size: Option<u64>,
    /// The kernel module (null for the core kernel) or, for processes and
    /// ELF files, the file the symbol is in.
    pub module: Option<Cow<'a, str>>,
    /// The source line in the symbol's own function (of the outermost
    /// inlined call when the address is in inlined code); null without
    /// debug info.
    pub code: Option<CodeLocation<'a>>,
    /// Inlined calls the address is in, outermost first.
    pub inlined: Vec<InlinedFrame<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownAddress<'a> {
    pub address: HexAddress,
    /// Why it did not resolve (e.g. `the address is not mapped`).
    pub unknown: Cow<'a, str>,
}

/// A source location from DWARF line information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeLocation<'a> {
    pub file: Cow<'a, str>,
    pub line: Option<u32>,
    /// `0` is the left edge, as DWARF has it.
    pub column: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlinedFrame<'a> {
    pub name: Cow<'a, str>,
    /// Where the address is within the inlined function.
    pub code: Option<CodeLocation<'a>>,
}

/// An address printed as `0x`-prefixed lowercase hex (JSON numbers lose
/// precision past 2^53, and kernel addresses are past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HexAddress(pub u64);

impl std::fmt::Display for HexAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for HexAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(Self)
            .ok_or_else(|| serde::de::Error::custom(format!("address {text:?} is not 0x-prefixed hex")))
    }
}
