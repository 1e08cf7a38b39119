//! Source positions of code addresses, from `.gopclntab`: what the Go runtime
//! itself prints in a stack trace, so it works on stripped binaries too.
//!
//! For an address the function table (`pclntab`) gives the function; its
//! pc-value tables give the file (`pcfile`, an index into the compilation unit's
//! file list) and line (`pcln`) there (`funcline1` in `runtime/symtab.go`). When
//! the compiler inlined calls at that address, its `PCDATA_InlTreeIndex` table
//! gives an index into the function's inline tree (`FUNCDATA_InlTree`, at
//! `moduledata.gofunc` plus the funcdata offset). That entry names the inlined
//! function and its `parentPc`, an address whose position is that of the call,
//! which is resolved the same way until the index is -1: the physical function
//! (`inlineUnwinder` in `runtime/symtabinl.go`, Go 1.21+; `CallersFrames.next`
//! and `expandFinalInlineFrame` in `runtime/symtab.go`, Go 1.19, which use the
//! same `parentPc` walk). The indices are `PCDATA_InlTreeIndex = 2` and
//! `FUNCDATA_InlTree = 3` (`cmd/internal/objabi/funcdata.go`,
//! `internal/abi/symtab.go`) in every supported version.
//!
//! Everything read is bounds-checked: corrupt tables give `None`, never a panic.

use anyhow::{Context, Result};

use super::{
    fields,
    image::Image,
    pclntab::{self, MAGIC_GO118, Pclntab},
};

/// `PCDATA_InlTreeIndex` (`cmd/internal/objabi/funcdata.go`).
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `FUNCDATA_InlTree` (`cmd/internal/objabi/funcdata.go`).
const FUNCDATA_INL_TREE: u8 = 3;
/// Deepest chain of inlined calls followed at one address: the compiler's inlining
/// budget keeps real chains short, a corrupt tree could loop.
const MAX_INLINE_DEPTH: usize = 256;

/// One source frame at an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceFrame {
    /// As the runtime names it, e.g. `main.(*T).run` or `runtime.gopark`.
    pub function: String,
    /// `?` when the table does not say (as the runtime prints it).
    pub file: String,
    /// 0 when the table does not say.
    pub line: i64,
    /// Line of the function's `func` keyword: 0 before Go 1.20, which does not keep it.
    pub start_line: i64,
}

/// Layout of an `inlinedCall`, the entry of an inline tree.
#[derive(Debug, Clone, Copy)]
struct InlinedCallLayout {
    size: usize,
    name_off: usize,
    parent_pc: usize,
    start_line: Option<usize>,
}

impl InlinedCallLayout {
    /// Go 1.18-1.19 (`runtime/symtab.go`): `parent i16 · funcID u8 · pad u8 ·
    /// file i32 · line i32 · func_ i32 · parentPc i32`.
    const GO118: Self = Self {
        size: 20,
        name_off: 12,
        parent_pc: 16,
        start_line: None,
    };
    /// Go 1.20+ (`runtime/symtabinl.go`; the magic changed with it):
    /// `funcID u8 · pad [3]u8 · nameOff i32 · parentPc i32 · startLine i32`.
    const GO120: Self = Self {
        size: 16,
        name_off: 4,
        parent_pc: 8,
        start_line: Some(12),
    };
}

/// The inline trees: the bytes from `moduledata.gofunc` to the end of its segment.
struct InlineTrees {
    gofunc: Vec<u8>,
    layout: InlinedCallLayout,
}

/// Resolves link-time addresses of a Go binary to source frames.
pub struct SourceLines {
    /// A copy of the function table's bytes, from its header on.
    pclntab: Vec<u8>,
    /// Every function's (entry, `_func` offset), sorted by entry.
    functions: Vec<(u64, u32)>,
    /// End of the last function.
    text_end: u64,
    /// None when `moduledata.gofunc` could not be found: one frame per address.
    inline: Option<InlineTrees>,
}

impl SourceLines {
    /// Reads the tables of the binary `image`; `struct_offsets` are the binary's
    /// runtime struct offsets (for `moduledata.text` and `moduledata.gofunc`).
    pub(super) fn parse(
        image: &Image<'_, '_>,
        struct_offsets: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Self> {
        let located = pclntab::locate(image, fields::MODULEDATA_TEXT.offset_in(struct_offsets))?;
        let table = &located.table;
        let mut functions = table
            .function_table()?
            .into_iter()
            .map(|(entry_off, func_off)| {
                Ok((
                    located
                        .text_start
                        .checked_add(u64::from(entry_off))
                        .context(".gopclntab puts functions past the end of the address space")?,
                    func_off,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // The linker writes it sorted; a corrupt table must not break the search.
        functions.sort_unstable();
        let text_end = located
            .text_start
            .checked_add(table.end_offset()?)
            .context(".gopclntab puts functions past the end of the address space")?;
        let layout = if table.magic == MAGIC_GO118 {
            InlinedCallLayout::GO118
        } else {
            InlinedCallLayout::GO120
        };
        let inline = fields::MODULEDATA_GOFUNC
            .offset_in(struct_offsets)
            .and_then(|field| {
                let moduledata = pclntab::find_moduledata(image, located.vaddr, table)?;
                let gofunc = image.pointer(moduledata.checked_add(field)?)?;
                image.bytes_to_segment_end(gofunc)
            })
            .map(|bytes| InlineTrees {
                gofunc: bytes.to_vec(),
                layout,
            });
        Ok(Self {
            pclntab: table.bytes().to_vec(),
            functions,
            text_end,
            inline,
        })
    }

    /// Whether inlined frames are resolved (else every address has one frame).
    pub fn has_inline_frames(&self) -> bool {
        self.inline.is_some()
    }

    /// `[start, end)` of Go's code (link-time).
    pub fn text_range(&self) -> Option<(u64, u64)> {
        Some((self.functions.first()?.0, self.text_end))
    }

    /// Frames at link-time address `vaddr`, innermost first: more than one when
    /// code was inlined there. None outside Go code, or where the tables are corrupt.
    pub fn frames_at(&self, vaddr: u64) -> Option<Vec<SourceFrame>> {
        if vaddr >= self.text_end {
            return None;
        }
        let after = self.functions.partition_point(|(entry, _)| *entry <= vaddr);
        let (entry, func_off) = *self.functions.get(after.checked_sub(1)?)?;
        let table = Pclntab::parse(&self.pclntab).ok()?;
        let func = table.func_record(func_off).ok()?;
        let file_line = |pc: u64| {
            // `funcline1`: "?", 0 when either table has no value there.
            let fileno = table.pcvalue(func.pcfile, entry, pc);
            let line = table.pcvalue(func.pcln, entry, pc);
            if fileno == -1 || line == -1 {
                return ("?".to_owned(), 0);
            }
            let file = table
                .file_name(func.cu_offset, fileno)
                .unwrap_or_else(|| "?".to_owned());
            (file, i64::from(line))
        };
        let mut frames = Vec::new();
        let mut pc = vaddr;
        if let Some(trees) = &self.inline
            && let Some(tree) = table.funcdata_offset(&func, FUNCDATA_INL_TREE).ok()?
        {
            let index_table = table.pcdata_offset(&func, PCDATA_INL_TREE_INDEX).ok()?;
            for _ in 0..MAX_INLINE_DEPTH {
                let index = table.pcvalue(index_table, entry, pc);
                if index < 0 {
                    break;
                }
                let call = trees.call(tree, index)?;
                let (file, line) = file_line(pc);
                frames.push(SourceFrame {
                    function: table.name(call.name_off).ok()?,
                    file,
                    line,
                    start_line: i64::from(call.start_line),
                });
                // `entry + uintptr(parentPc)`: an address within the same function.
                pc = entry.wrapping_add(i64::from(call.parent_pc) as u64);
            }
        }
        let (file, line) = file_line(pc);
        frames.push(SourceFrame {
            function: table.name(func.name_off).ok()?,
            file,
            line,
            start_line: i64::from(func.start_line),
        });
        Some(frames)
    }
}

/// An inline tree entry, as far as the frames need it.
struct InlinedCall {
    name_off: i32,
    parent_pc: i32,
    start_line: i32,
}

impl InlineTrees {
    /// Entry `index` of the tree at `tree` (offset from `moduledata.gofunc`).
    fn call(&self, tree: u32, index: i32) -> Option<InlinedCall> {
        let layout = self.layout;
        let at = usize::try_from(index)
            .ok()?
            .checked_mul(layout.size)?
            .checked_add(usize::try_from(tree).ok()?)?;
        let field = |offset: usize| -> Option<i32> {
            let start = at.checked_add(offset)?;
            let bytes = self.gofunc.get(start..start.checked_add(4)?)?;
            Some(i32::from_le_bytes(bytes.try_into().ok()?))
        };
        Some(InlinedCall {
            name_off: field(layout.name_off)?,
            parent_pc: field(layout.parent_pc)?,
            start_line: match layout.start_line {
                Some(offset) => field(offset)?,
                None => 0,
            },
        })
    }
}
