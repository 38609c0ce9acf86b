//! Bounds-checked access to guest linear memory. Every pointer a guest hands
//! the host goes through here: an out-of-range pointer is `EFAULT`, never a
//! host panic or an out-of-bounds host read.

use crate::errno::{Errno, EFAULT, ENAMETOOLONG};
use crate::store::StoreData;
use wasmtime::Caller;

/// Longest NUL-terminated string (paths, names) the host reads from the guest.
pub const MAX_CSTR: usize = 4096;

/// The guest's memory and the host state, borrowed together for an import call.
pub fn split<'a>(caller: &'a mut Caller<'_, StoreData>) -> (&'a mut [u8], &'a mut StoreData) {
    let memory = caller
        .data()
        .memory
        .expect("imports are only callable once the main module's memory exists");
    memory.data_and_store_mut(caller)
}

/// The range `[ptr, ptr+len)` of `mem`, or `EFAULT`.
pub fn range(mem: &[u8], ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Errno> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(EFAULT)?;
    if end > mem.len() {
        return Err(EFAULT);
    }
    Ok(start..end)
}

pub fn bytes(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8], Errno> {
    Ok(&mem[range(mem, ptr, len)?])
}

pub fn bytes_mut(mem: &mut [u8], ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
    let r = range(mem, ptr, len)?;
    Ok(&mut mem[r])
}

pub fn read_u32(mem: &[u8], ptr: u32) -> Result<u32, Errno> {
    Ok(u32::from_le_bytes(bytes(mem, ptr, 4)?.try_into().unwrap()))
}

pub fn read_i32(mem: &[u8], ptr: u32) -> Result<i32, Errno> {
    read_u32(mem, ptr).map(|v| v as i32)
}

pub fn read_u64(mem: &[u8], ptr: u32) -> Result<u64, Errno> {
    Ok(u64::from_le_bytes(bytes(mem, ptr, 8)?.try_into().unwrap()))
}

pub fn write_u8(mem: &mut [u8], ptr: u32, v: u8) -> Result<(), Errno> {
    bytes_mut(mem, ptr, 1)?[0] = v;
    Ok(())
}

pub fn write_u16(mem: &mut [u8], ptr: u32, v: u16) -> Result<(), Errno> {
    bytes_mut(mem, ptr, 2)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

pub fn write_u32(mem: &mut [u8], ptr: u32, v: u32) -> Result<(), Errno> {
    bytes_mut(mem, ptr, 4)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

pub fn write_i32(mem: &mut [u8], ptr: u32, v: i32) -> Result<(), Errno> {
    write_u32(mem, ptr, v as u32)
}

pub fn write_u64(mem: &mut [u8], ptr: u32, v: u64) -> Result<(), Errno> {
    bytes_mut(mem, ptr, 8)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

pub fn write_i64(mem: &mut [u8], ptr: u32, v: i64) -> Result<(), Errno> {
    write_u64(mem, ptr, v as u64)
}

pub fn write_bytes(mem: &mut [u8], ptr: u32, data: &[u8]) -> Result<(), Errno> {
    let len = u32::try_from(data.len()).map_err(|_| EFAULT)?;
    bytes_mut(mem, ptr, len)?.copy_from_slice(data);
    Ok(())
}

/// A NUL-terminated string of at most [`MAX_CSTR`] bytes (without the NUL).
pub fn cstr(mem: &[u8], ptr: u32) -> Result<&[u8], Errno> {
    let start = ptr as usize;
    if start >= mem.len() {
        return Err(EFAULT);
    }
    let window = &mem[start..mem.len().min(start + MAX_CSTR + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => Ok(&window[..n]),
        None if window.len() > MAX_CSTR => Err(ENAMETOOLONG),
        None => Err(EFAULT),
    }
}

/// A NUL-terminated UTF-8 string, lossily decoded.
pub fn string(mem: &[u8], ptr: u32) -> Result<String, Errno> {
    Ok(String::from_utf8_lossy(cstr(mem, ptr)?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_pointers_are_efault() {
        let mut mem = vec![0u8; 16];
        assert_eq!(read_u32(&mem, 13), Err(EFAULT));
        assert_eq!(read_u32(&mem, u32::MAX), Err(EFAULT));
        assert_eq!(bytes(&mem, 8, u32::MAX).unwrap_err(), EFAULT);
        assert!(write_u64(&mut mem, 8, 1).is_ok());
        assert_eq!(write_u64(&mut mem, 9, 1), Err(EFAULT));
    }

    #[test]
    fn cstr_is_bounded() {
        let mut mem = vec![b'a'; MAX_CSTR + 10];
        assert_eq!(cstr(&mem, 0), Err(ENAMETOOLONG));
        assert_eq!(cstr(&mem, (MAX_CSTR + 5) as u32), Err(EFAULT));
        mem[3] = 0;
        assert_eq!(cstr(&mem, 0).unwrap(), b"aaa");
    }
}
