//! `.go.buildinfo`: the Go version (and module info) every Go ≥ 1.18 binary carries,
//! stripped or not.
//!
//! Layout (Go 1.18+, `src/debug/buildinfo/buildinfo.go`): a 32-byte header
//! `"\xff Go buildinf:"`, pointer size (1 byte), flags (1 byte), padding; when
//! flags bit 1 is set the version and the module info follow inline, each as a
//! uvarint length and that many bytes.

use anyhow::{Result, bail, ensure};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;

/// What `.go.buildinfo` says about the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// As the toolchain spells it, e.g. `go1.25.5`.
    pub go_version: String,
    /// The text `go version -m` prints (path, mod, dep, build lines), may be empty.
    pub mod_info: String,
}

impl BuildInfo {
    /// The main package path (`path` line), e.g. `example.com/cmd/server`.
    pub fn package_path(&self) -> Option<&str> {
        self.lines("path").next()
    }

    /// The main module (`mod` line): path and version.
    pub fn module(&self) -> Option<&str> {
        self.lines("mod").next()
    }

    /// Build settings (`build` lines), e.g. `("-buildmode", "pie")`, `("CGO_ENABLED", "1")`.
    pub fn settings(&self) -> Vec<(&str, &str)> {
        self.lines("build")
            .filter_map(|setting| setting.split_once('='))
            .collect()
    }

    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The rest of each `kind<TAB>...` line.
    fn lines<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.mod_info
            .lines()
            .filter_map(move |line| line.strip_prefix(kind)?.strip_prefix('\t'))
    }
}

pub fn parse(section: &[u8]) -> Result<BuildInfo> {
    ensure!(
        section.len() >= HEADER_LEN && section.starts_with(MAGIC),
        ".go.buildinfo has no Go build-info header"
    );
    let flags = section[MAGIC.len() + 1];
    if flags & FLAG_INLINE_STRINGS == 0 {
        bail!("this .go.buildinfo stores pointers to its strings (Go 1.17 or older)");
    }
    let mut rest = &section[HEADER_LEN..];
    let go_version = String::from_utf8_lossy(read_string(&mut rest)?).into_owned();
    let mod_info = read_string(&mut rest).unwrap_or_default();
    ensure!(
        go_version.starts_with("go"),
        ".go.buildinfo names no Go version (found {go_version:?})"
    );
    Ok(BuildInfo {
        go_version,
        mod_info: String::from_utf8_lossy(strip_sentinels(mod_info)).into_owned(),
    })
}

fn read_string<'a>(data: &mut &'a [u8]) -> Result<&'a [u8]> {
    let (len, used) = read_uvarint(data)?;
    let len = usize::try_from(len)?;
    ensure!(
        data.len() - used >= len,
        ".go.buildinfo string runs past the section"
    );
    let bytes = &data[used..used + len];
    *data = &data[used + len..];
    Ok(bytes)
}

/// Go's `encoding/binary.Uvarint`: 7 bits per byte, low first, at most 10 bytes.
fn read_uvarint(data: &[u8]) -> Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    bail!(".go.buildinfo has a malformed length")
}

/// Module info is framed by 16 sentinel bytes on each side (as Go's
/// `debug/buildinfo` strips them).
fn strip_sentinels(mod_info: &[u8]) -> &[u8] {
    if mod_info.len() >= 33 && mod_info[mod_info.len() - 17] == b'\n' {
        &mod_info[16..mod_info.len() - 16]
    } else {
        &[]
    }
}

/// `go1.25.5` → (1, 25). Pre-release names such as `go1.26rc1` give (1, 26).
pub fn major_minor(go_version: &str) -> Option<(u32, u32)> {
    let rest = go_version.strip_prefix("go")?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_minor("go1.25.5"), Some((1, 25)));
        assert_eq!(major_minor("go1.19"), Some((1, 19)));
        assert_eq!(major_minor("go1.26rc1"), Some((1, 26)));
        assert_eq!(major_minor("devel +abc"), None);
    }

    #[test]
    fn truncated_sections_are_errors() {
        let mut section = MAGIC.to_vec();
        section.extend([8, 2]);
        section.resize(HEADER_LEN, 0);
        section.extend([20, b'g', b'o']);
        assert!(parse(&section).is_err());
        assert!(parse(&section[..10]).is_err());
        assert!(parse(&[0xff; 40]).is_err());
    }
}
