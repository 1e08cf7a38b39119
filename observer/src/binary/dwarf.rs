//! Field offsets of runtime structs, read from the binary's DWARF.

use std::{borrow::Cow, collections::BTreeMap};

use anyhow::{Context, Result};
use gimli::{EndianSlice, LittleEndian};
use object::{Object, ObjectSection};

/// `wanted` lists struct names with the members to find, e.g.
/// `("runtime.g", &["goid", "m"])`. Returns `"runtime.g.goid" → offset` for each
/// member found; callers decide what is missing.
pub fn member_offsets(
    file: &object::File<'_>,
    wanted: &[(&str, &[&str])],
) -> Result<BTreeMap<String, u64>> {
    // Go compresses its DWARF (SHF_COMPRESSED); `uncompressed_data` undoes it.
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>> {
        match file.section_by_name(id.name()) {
            Some(section) => Ok(section
                .uncompressed_data()
                .with_context(|| format!("cannot decompress {}", id.name()))?),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));

    let mut found = BTreeMap::new();
    let mut structs_left = wanted.len();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut tree = unit.entries_tree(None)?;
        let root = tree.root()?;
        // Go emits its types as direct children of a compile unit.
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                continue;
            };
            let name = dwarf.attr_string(&unit, name)?;
            let Some((struct_name, members)) = wanted
                .iter()
                .find(|(wanted_name, _)| wanted_name.as_bytes() == name.slice())
            else {
                continue;
            };
            let mut fields = child.children();
            while let Some(field) = fields.next()? {
                let field = field.entry();
                if field.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let (Some(field_name), Some(location)) = (
                    field.attr_value(gimli::DW_AT_name),
                    field.attr_value(gimli::DW_AT_data_member_location),
                ) else {
                    continue;
                };
                let field_name = dwarf.attr_string(&unit, field_name)?;
                let field_name = String::from_utf8_lossy(field_name.slice());
                if members.contains(&field_name.as_ref())
                    && let Some(offset) = location.udata_value()
                {
                    found.insert(format!("{struct_name}.{field_name}"), offset);
                }
            }
            structs_left -= 1;
            if structs_left == 0 {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

/// Whether the binary has DWARF type information at all.
pub fn has_debug_info(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info")
        .is_some_and(|section| section.size() > 0)
}
