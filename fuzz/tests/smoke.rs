//! Each fuzz target's body on a fixed set of inputs, without libFuzzer or a corpus: seeds that
//! reach the interesting paths, then pseudo-random bytes. `cargo test` here (stable) runs it.

/// Deterministic pseudo-random inputs (xorshift), so that a failure reproduces.
fn inputs(seeds: &[&[u8]], count: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut all: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    for _ in 0..count {
        let len = (next() % 64) as usize;
        all.push((0..len).map(|_| next() as u8).collect());
    }
    // Seeds with one byte changed: near misses of the valid forms.
    for seed in seeds.iter().filter(|s| !s.is_empty()) {
        for _ in 0..count / seeds.len().max(1) / 4 {
            let mut changed = seed.to_vec();
            let at = (next() as usize) % changed.len();
            changed[at] = next() as u8;
            all.push(changed);
        }
    }
    all
}

const RANDOM: usize = 4000;

#[test]
fn secrets() {
    let key = zsc::domain::ZscKey::generate();
    let token = zsc::domain::AccountToken::generate();
    for input in inputs(
        &[key.expose().as_bytes(), token.expose().as_bytes(), b"zsc_"],
        RANDOM,
    ) {
        zsc_fuzz::secrets(&input);
    }
}

#[test]
fn names() {
    let seeds: &[&[u8]] = &[
        b"Acme",
        "Caf\u{e9}".as_bytes(),
        "Cafe\u{301}".as_bytes(),
        "Acme\u{200b}".as_bytes(),
        b"ada@acme.example",
        "ada@b\u{fc}cher.example".as_bytes(),
        b"desk-prod_1.eu",
    ];
    for input in inputs(seeds, RANDOM) {
        zsc_fuzz::names(&input);
    }
}

#[test]
fn page_tokens() {
    for input in inputs(&[b"b3Jncwpvcmdf", b"orgs\norg_x", b""], RANDOM) {
        zsc_fuzz::page_tokens(&input);
    }
}

#[test]
fn records() {
    for input in inputs(&[b"\x0a\x04Acme\x10\x04\x18\x01", b"\xff\xff"], RANDOM) {
        zsc_fuzz::records(&input);
    }
}

#[test]
fn requests() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for rpc in 0..zsc_fuzz::RPCS {
        seeds.push(vec![rpc]);
        seeds.push(vec![rpc, 0xff, 0xff, 0xff]);
        seeds.push(vec![rpc, 0x0a, 0x02, 0xc3, 0x28]);
        seeds.push([&[rpc, 0x0a, 0x04][..], b"Acme", &[0x10, 0x04]].concat());
    }
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    for input in inputs(&seeds, RANDOM) {
        zsc_fuzz::requests(&input);
    }
}
