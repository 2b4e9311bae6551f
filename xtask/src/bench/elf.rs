//! The smallest static programs the benchmark needs, written out as ELF
//! files at run time: one that exits at once (the exec storm's target) and
//! one that waits for a signal (the 10,000 tracked processes). No libc, no
//! loader: an exec of them costs the kernel's exec path and nothing else.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, Result};

const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// `mov eax, 60; xor edi, edi; syscall`: exit(0).
const EXIT: &[u8] = &[0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
/// `mov eax, 34; syscall; jmp -9`: pause() forever; a signal ends it.
const PAUSE: &[u8] = &[0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];

/// An x86-64 ELF executable whose whole text is `code`.
fn elf(code: &[u8]) -> Vec<u8> {
    let entry = BASE + (EHDR + PHDR) as u64;
    let total = (EHDR + PHDR + code.len()) as u64;
    let mut b = Vec::with_capacity(total as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    b.extend_from_slice(&1u32.to_le_bytes()); // e_version
    b.extend_from_slice(&entry.to_le_bytes()); // e_entry
    b.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    b.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    b.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    b.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    b.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    b.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    b.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    b.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    b.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    b.extend_from_slice(&total.to_le_bytes()); // p_filesz
    b.extend_from_slice(&total.to_le_bytes()); // p_memsz
    b.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    b.extend_from_slice(code);
    b
}

fn write(path: &Path, code: &[u8]) -> Result<()> {
    fs::write(path, elf(code)).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Writes the two programs into `dir`; returns (exit-at-once, pause).
pub fn write_programs(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (exit, pause) = (dir.join("ew-true"), dir.join("ew-pause"));
    write(&exit, EXIT)?;
    write(&pause, PAUSE)?;
    Ok((exit, pause))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_and_entry_point() {
        let b = elf(EXIT);
        assert_eq!(b.len(), EHDR + PHDR + EXIT.len());
        assert_eq!(&b[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"));
        assert_eq!(entry, BASE + 120);
    }

    #[test]
    fn the_exit_program_runs_and_exits_zero() {
        let dir = std::env::temp_dir().join(format!("ew-elf-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let (exit, _) = write_programs(&dir).expect("write");
        let status = std::process::Command::new(&exit).status().expect("exec");
        assert!(status.success());
        let _ = fs::remove_dir_all(&dir);
    }
}
