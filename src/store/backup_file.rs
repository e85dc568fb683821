//! The backup file format, written once for every backup and read once for every restore:
//! a magic line, then length-delimited entries (table, key, value), then an end entry holding
//! the count and a blake3 digest of everything before it.

use std::{
    fs::File,
    io::{BufReader, Read, Write},
    path::Path,
};

use prost::Message;

use super::sled::files::io_error;
use super::tables::Table;
use crate::domain::{Error, Result};

const MAGIC: &[u8] = b"ZSCBACKUP1\n";

#[derive(Clone, PartialEq, Message)]
struct Entry {
    /// Empty for the end entry.
    #[prost(string, tag = "1")]
    tree: String,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

/// How far a backup or restore has got: entries and bytes of the backup file so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub entries: u64,
    pub bytes: u64,
}

/// What a backup or restore calls as it goes.
pub type Progress<'a> = dyn FnMut(Done) + Send + 'a;

/// Entries between two progress reports.
pub(super) const REPORT_EVERY: u64 = 10_000;

/// Writes a backup file: the magic, then each entry as it comes, then the end entry.
pub(super) struct Encoder<'a> {
    out: &'a mut (dyn Write + Send),
    digest: blake3::Hasher,
    done: Done,
    buffer: Vec<u8>,
    progress: &'a mut Progress<'a>,
}

impl<'a> Encoder<'a> {
    pub(super) fn new(
        out: &'a mut (dyn Write + Send),
        progress: &'a mut Progress<'a>,
    ) -> Result<Self> {
        let mut encoder = Encoder {
            out,
            digest: blake3::Hasher::new(),
            done: Done::default(),
            buffer: Vec::new(),
            progress,
        };
        encoder.write(MAGIC)?;
        Ok(encoder)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::internal(format!("writing the backup: {e}")))?;
        self.done.bytes += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn entry(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if !table.backed_up() {
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        Entry {
            tree: table.name().to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
        .encode_length_delimited(&mut buffer)
        .expect("a Vec grows as needed");
        self.digest.update(&buffer);
        self.write(&buffer)?;
        self.buffer = buffer;
        self.done.entries += 1;
        if self.done.entries.is_multiple_of(REPORT_EVERY) {
            (self.progress)(self.done);
        }
        Ok(())
    }

    /// Writes the end entry (the count and the digest); returns what was written.
    pub(super) fn finish(mut self) -> Result<Done> {
        let end = Entry {
            tree: String::new(),
            key: self.done.entries.to_be_bytes().to_vec(),
            value: self.digest.finalize().as_bytes().to_vec(),
        };
        self.write(&end.encode_length_delimited_to_vec())?;
        (self.progress)(self.done);
        Ok(self.done)
    }
}

/// One key of one table, read back from a backup.
pub(super) struct Restored {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Reads a backup file entry by entry, checking the magic, every entry, and at the end the
/// count and the digest: an entry is only known good once the end entry has been read.
pub(super) struct Decoder {
    input: BufReader<File>,
    name: String,
    digest: blake3::Hasher,
    pub done: Done,
    ended: bool,
}

impl Decoder {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let mut decoder = Decoder {
            input: BufReader::with_capacity(1 << 20, file),
            name: path.display().to_string(),
            digest: blake3::Hasher::new(),
            done: Done::default(),
            ended: false,
        };
        let mut magic = [0; MAGIC.len()];
        if decoder.input.read_exact(&mut magic).is_err() || magic != MAGIC {
            return Err(decoder.refuse("wrong header"));
        }
        decoder.done.bytes = MAGIC.len() as u64;
        Ok(decoder)
    }

    fn refuse(&self, why: &str) -> Error {
        Error::invalid(format!("{} is not a zsc backup: {why}", self.name))
    }

    /// The next entry; None after the end entry (once the count and the digest check out).
    pub fn next_entry(&mut self) -> Result<Option<Restored>> {
        if self.ended {
            return Ok(None);
        }
        let corrupt = "truncated or corrupt entry";
        // The length prefix: a varint of at most 10 bytes.
        let mut framed = Vec::with_capacity(64);
        loop {
            let mut byte = [0];
            self.input
                .read_exact(&mut byte)
                .map_err(|_| self.refuse(corrupt))?;
            framed.push(byte[0]);
            if byte[0] < 0x80 {
                break;
            }
            if framed.len() == 10 {
                return Err(self.refuse(corrupt));
            }
        }
        let len = prost::decode_length_delimiter(&framed[..]).map_err(|_| self.refuse(corrupt))?;
        let start = framed.len();
        framed.resize(start + len, 0);
        self.input
            .read_exact(&mut framed[start..])
            .map_err(|_| self.refuse(corrupt))?;
        let entry = Entry::decode(&framed[start..]).map_err(|_| self.refuse(corrupt))?;
        self.done.bytes += framed.len() as u64;
        if entry.tree.is_empty() {
            let count = <[u8; 8]>::try_from(entry.key.as_slice())
                .map_err(|_| self.refuse("corrupt end entry"))?;
            if u64::from_be_bytes(count) != self.done.entries
                || entry.value != self.digest.finalize().as_bytes()
            {
                return Err(self.refuse("checksum mismatch"));
            }
            if self
                .input
                .read(&mut [0])
                .map_err(|_| self.refuse(corrupt))?
                != 0
            {
                return Err(self.refuse("data after the end entry"));
            }
            self.ended = true;
            return Ok(None);
        }
        let table = Table::from_name(&entry.tree).ok_or_else(|| self.refuse("unknown tree"))?;
        self.digest.update(&framed);
        self.done.entries += 1;
        Ok(Some(Restored {
            table,
            key: entry.key,
            value: entry.value,
        }))
    }
}
