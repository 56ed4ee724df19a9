//! The rental sample data behind `flux-engine sample-data`: a deterministic
//! generator of the four rental CSV files (`locations.csv`, `users.csv`,
//! `vehicles.csv`, `rental_transactions.csv`) with the reference dataset's
//! headers, column order and facts, at any size.
//!
//! Determinism: every value comes from ChaCha8 (`rand_chacha`, whose output
//! is value-stable) keyed from the seed by our own code, and is reduced to a
//! range by our own code (not `rand`'s distributions, whose algorithms may
//! change between versions). Same seed and N give byte-identical files.
//!
//! Bounded memory: files are streamed through a `BufWriter`; no table is
//! held. Ids are a keyed 40-bit permutation (a Feistel network) of the row
//! number, so they are unique, look random, and a transaction can name the
//! id of user or vehicle number `i` without a lookup. A vehicle's type is a
//! keyed hash of its row number, so a transaction knows its rate without a
//! lookup. Only the location ids (at most 300) are kept.
//!
//! Table sizes for N transactions (see [`Sizes::for_transactions`]):
//! users = max(50, N/2), vehicles = max(50, N), locations = min(300, max(20, N/10)).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Ids are 10 hex digits (40 bits), so no table may have more rows.
pub const MAX_TRANSACTIONS: u64 = 1_000_000_000_000;

pub const LOCATIONS_HEADER: [&str; 8] = [
    "location_id",
    "location_name",
    "address",
    "city",
    "state",
    "zip_code",
    "latitude",
    "longitude",
];
pub const USERS_HEADER: [&str; 9] = [
    "user_id",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "driver_license_number",
    "driver_license_expiry",
    "creation_date",
    "is_active",
];
pub const VEHICLES_HEADER: [&str; 14] = [
    "active",
    "vehicle_license_number",
    "registration_name",
    "license_type",
    "expiration_date",
    "permit_license_number",
    "certification_date",
    "vehicle_year",
    "base_telephone_number",
    "base_address",
    "vehicle_id",
    "last_update_timestamp",
    "brand",
    "vehicle_type",
];
pub const TRANSACTIONS_HEADER: [&str; 8] = [
    "rental_id",
    "user_id",
    "vehicle_id",
    "rental_start_time",
    "rental_end_time",
    "pickup_location",
    "dropoff_location",
    "total_amount",
];

/// Row counts of the four tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub locations: u64,
    pub users: u64,
    pub vehicles: u64,
    pub transactions: u64,
}

impl Sizes {
    /// Users ≈ two rentals each, about one vehicle per rental (so roughly
    /// 63% of vehicles are rented, near the reference's 73%), and one
    /// location per ten rentals, between 20 and the reference's 300.
    pub fn for_transactions(n: u64) -> Sizes {
        Sizes {
            locations: (n / 10).clamp(20, 300),
            users: (n / 2).max(50),
            vehicles: n.max(50),
            transactions: n,
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// N is 0 or above [`MAX_TRANSACTIONS`].
    Transactions(u64),
    /// The directory or a file in it cannot be created: bad `--out`.
    Create { path: PathBuf, source: io::Error },
    /// Writing failed part-way (disk full, ...).
    Write { path: PathBuf, source: io::Error },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Transactions(_) | Error::Create { .. } => 2,
            Error::Write { .. } => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transactions(n) => write!(
                f,
                "--transactions must be from 1 to {MAX_TRANSACTIONS}, not {n}"
            ),
            Error::Create { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            Error::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

/// One written file.
pub struct FileSummary {
    pub name: &'static str,
    pub rows: u64,
    pub bytes: u64,
}

pub struct Summary {
    pub out: PathBuf,
    pub files: Vec<FileSummary>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} files to {}:",
            self.files.len(),
            self.out.display()
        )?;
        for (i, file) in self.files.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} {} {} rows", file.name, file.rows)?;
        }
        let bytes: u64 = self.files.iter().map(|file| file.bytes).sum();
        write!(f, "; {bytes} bytes")
    }
}

/// Writes the four files into `out` (created if missing; existing files of
/// the same names are replaced, each only once it is complete).
pub fn generate(out: &Path, transactions: u64, seed: u64) -> Result<Summary, Error> {
    if transactions == 0 || transactions > MAX_TRANSACTIONS {
        return Err(Error::Transactions(transactions));
    }
    fs::create_dir_all(out).map_err(|source| Error::Create {
        path: out.to_path_buf(),
        source,
    })?;
    let sizes = Sizes::for_transactions(transactions);
    let keys = Keys::new(seed);
    let mut files = Vec::with_capacity(4);

    let mut location_ids = Vec::new();
    files.push(write_file(
        out,
        "locations.csv",
        &LOCATIONS_HEADER,
        |rows| {
            location_ids = locations(rows, &mut Rng::new(seed, 1), sizes.locations)?;
            Ok(())
        },
    )?);
    files.push(write_file(out, "users.csv", &USERS_HEADER, |rows| {
        users(rows, &mut Rng::new(seed, 2), &keys, sizes.users)
    })?);
    files.push(write_file(out, "vehicles.csv", &VEHICLES_HEADER, |rows| {
        vehicles(rows, &mut Rng::new(seed, 3), &keys, sizes.vehicles)
    })?);
    files.push(write_file(
        out,
        "rental_transactions.csv",
        &TRANSACTIONS_HEADER,
        |rows| rental_transactions(rows, &mut Rng::new(seed, 4), &keys, &sizes, &location_ids),
    )?);
    Ok(Summary {
        out: out.to_path_buf(),
        files,
    })
}

type Csv = csv::Writer<BufWriter<File>>;

/// Streams records field by field through one reusable buffer.
struct Rows {
    w: Csv,
    buf: Vec<u8>,
    count: u64,
}

impl Rows {
    fn text(&mut self, s: &str) -> io::Result<()> {
        self.w.write_field(s)?;
        Ok(())
    }

    fn field(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.buf.clear();
        fill(&mut self.buf);
        self.w.write_field(&self.buf)?;
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        self.w.write_record(None::<&[u8]>)?;
        self.count += 1;
        Ok(())
    }
}

/// Writes `name.tmp` in `dir`, then renames it to `name`.
fn write_file(
    dir: &Path,
    name: &'static str,
    header: &[&str],
    body: impl FnOnce(&mut Rows) -> io::Result<()>,
) -> Result<FileSummary, Error> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp).map_err(|source| Error::Create {
        path: tmp.clone(),
        source,
    })?;
    let write_err = |source| Error::Write {
        path: tmp.clone(),
        source,
    };
    let mut rows = Rows {
        w: csv::WriterBuilder::new().from_writer(BufWriter::with_capacity(1 << 16, file)),
        buf: Vec::with_capacity(64),
        count: 0,
    };
    rows.w
        .write_record(header)
        .map_err(|e| write_err(e.into()))?;
    body(&mut rows).map_err(write_err)?;
    let file = rows
        .w
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    let bytes = file.metadata().map_err(write_err)?.len();
    drop(file);
    fs::rename(&tmp, &path).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    Ok(FileSummary {
        name,
        rows: rows.count,
        bytes,
    })
}

// ---------------------------------------------------------------- tables

fn locations(rows: &mut Rows, rng: &mut Rng, count: u64) -> io::Result<Vec<u32>> {
    // Distinct ids from 1000..=9999: a partial Fisher-Yates shuffle.
    let mut pool: Vec<u32> = (1000..=9999).collect();
    for i in 0..count as usize {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(count as usize);
    for &id in &pool {
        rows.field(|b| push_dec(b, id.into()))?;
        let form = rng.below(3);
        rows.field(|b| {
            let a = rng.pick(LAST_NAMES);
            match form {
                0 => {
                    let (x, y) = (rng.pick(LAST_NAMES), rng.pick(LAST_NAMES));
                    write_str(b, &[a, ", ", x, " and ", y]);
                }
                1 => write_str(b, &[a, "-", rng.pick(LAST_NAMES)]),
                _ => write_str(b, &[a, " ", rng.pick(COMPANY_SUFFIXES)]),
            }
        })?;
        rows.field(|b| {
            push_dec(b, rng.range(1, 99_999));
            write_str(
                b,
                &[" ", rng.pick(LAST_NAMES), " ", rng.pick(STREET_SUFFIXES)],
            );
            match rng.below(4) {
                0 => {
                    b.extend_from_slice(b" Apt. ");
                    push_dec(b, rng.range(100, 999));
                }
                1 => {
                    b.extend_from_slice(b" Suite ");
                    push_dec(b, rng.range(100, 999));
                }
                _ => {}
            }
        })?;
        rows.text(rng.pick(CA_CITIES))?;
        rows.text("CA")?;
        rows.field(|b| push_dec(b, rng.range(90_001, 96_162)))?;
        rows.field(|b| push_fixed(b, rng.range(0, 1_800_000_000) as i64 - 900_000_000, 7))?;
        rows.field(|b| push_fixed(b, rng.range(0, 360_000_000) as i64 - 180_000_000, 6))?;
        rows.end()?;
    }
    Ok(pool)
}

fn users(rows: &mut Rows, rng: &mut Rng, keys: &Keys, count: u64) -> io::Result<()> {
    let created = (days(2024, 1, 1), days(2024, 5, 30));
    let expiry = (days(2024, 6, 4), days(2034, 6, 3));
    for i in 0..count {
        rows.field(|b| push_hex10(b, keys.user.apply(i)))?;
        let first = rng.pick(FIRST_NAMES);
        let last = rng.pick(LAST_NAMES);
        rows.text(first)?;
        rows.text(last)?;
        rows.field(|b| {
            write_str(b, &[first, ".", last, "@", rng.pick(EMAIL_DOMAINS)]);
            b.make_ascii_lowercase();
        })?;
        rows.field(|b| push_phone(b, rng))?;
        rows.field(|b| {
            push_letters(b, rng, 2);
            push_padded(b, rng.below(1_000_000), 6);
        })?;
        rows.field(|b| push_date(b, rng.range_i(expiry)))?;
        rows.field(|b| push_date(b, rng.range_i(created)))?;
        rows.text(if rng.below(100) < 80 { "1" } else { "0" })?;
        rows.end()?;
    }
    Ok(())
}

fn vehicles(rows: &mut Rows, rng: &mut Rng, keys: &Keys, count: u64) -> io::Result<()> {
    let expiration = (days(2024, 1, 1), days(2027, 11, 1));
    let certified = (days(2015, 1, 1), days(2023, 10, 6));
    let updated = (
        days(2024, 5, 1) * MINUTES_PER_DAY,
        days(2024, 7, 1) * MINUTES_PER_DAY - 1,
    );
    for i in 0..count {
        let kind = keys.vehicle_type(i);
        rows.text(if rng.below(1000) < 945 { "1" } else { "0" })?;
        rows.field(|b| push_dec(b, rng.range(5_000_000, 5_999_999)))?;
        rows.field(|b| {
            write_str(b, &[rng.pick(LAST_NAMES), ",", rng.pick(FIRST_NAMES)]);
            b.make_ascii_uppercase();
        })?;
        rows.text("FOR HIRE VEHICLE")?;
        rows.field(|b| push_date(b, rng.range_i(expiration)))?;
        rows.field(|b| {
            push_letters(b, rng, 2);
            push_padded(b, rng.below(1000), 3);
        })?;
        rows.field(|b| push_date(b, rng.range_i(certified)))?;
        rows.field(|b| push_dec(b, rng.range(2012, 2024)))?;
        rows.field(|b| {
            b.push(b'(');
            push_padded(b, rng.range(200, 999), 3);
            b.extend_from_slice(b") ");
            push_padded(b, rng.range(200, 999), 3);
            b.push(b'-');
            push_padded(b, rng.below(10_000), 4);
        })?;
        rows.field(|b| {
            push_dec(b, rng.range(100, 9999));
            write_str(
                b,
                &[" ", rng.pick(NY_STREETS), " ", rng.pick(NY_PLACES), " NY "],
            );
            push_dec(b, rng.range(10_001, 11_697));
        })?;
        rows.field(|b| push_hex10(b, keys.vehicle.apply(i)))?;
        rows.field(|b| push_datetime(b, rng.range_i(updated)))?;
        rows.text(rng.pick(kind.brands()))?;
        rows.text(kind.name())?;
        rows.end()?;
    }
    Ok(())
}

fn rental_transactions(
    rows: &mut Rows,
    rng: &mut Rng,
    keys: &Keys,
    sizes: &Sizes,
    location_ids: &[u32],
) -> io::Result<()> {
    // Start times: any minute of 2024-01-01 00:00 .. 2024-05-31 23:59.
    let first = days(2024, 1, 1) * MINUTES_PER_DAY;
    let span = (days(2024, 6, 1) - days(2024, 1, 1)) * MINUTES_PER_DAY;
    let places = location_ids.len() as u64;
    for i in 0..sizes.transactions {
        let user = rng.below(sizes.users);
        let vehicle = rng.below(sizes.vehicles);
        let start = first + rng.below(span as u64) as i64;
        let hours = rng.range(1, 72);
        let pickup = rng.below(places);
        // Never the pickup place, as in the reference.
        let dropoff = (pickup + 1 + rng.below(places - 1)) % places;
        rows.field(|b| push_hex10(b, keys.rental.apply(i)))?;
        rows.field(|b| push_hex10(b, keys.user.apply(user)))?;
        rows.field(|b| push_hex10(b, keys.vehicle.apply(vehicle)))?;
        rows.field(|b| push_datetime(b, start))?;
        rows.field(|b| push_datetime(b, start + hours as i64 * 60))?;
        rows.field(|b| push_dec(b, location_ids[pickup as usize].into()))?;
        rows.field(|b| push_dec(b, location_ids[dropoff as usize].into()))?;
        rows.field(|b| {
            push_dec(b, hours * keys.vehicle_type(vehicle).hourly_rate());
            b.extend_from_slice(b".0");
        })?;
        rows.end()?;
    }
    Ok(())
}

// ---------------------------------------------------------- randomness

/// ChaCha8 keyed from the seed by splitmix64, one stream per file, with our
/// own (version-independent) reduction to ranges.
struct Rng(ChaCha8Rng);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut key = [0u8; 32];
        let mut state = seed;
        for chunk in key.chunks_exact_mut(8) {
            chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Rng(rng)
    }

    /// A number in `0..n` (n ≥ 1), by multiply-shift: the bias is below
    /// n / 2^64, far too small to matter here.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn range_i(&mut self, (lo, hi): (i64, i64)) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mix64(*state)
}

/// The splitmix64 finaliser: a bijective scramble of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed permutation of 0..2^40: a four-round Feistel network on two
/// 20-bit halves. Row numbers map to distinct, random-looking ids.
struct IdPermutation([u64; 4]);

impl IdPermutation {
    const HALF: u32 = 20;
    const MASK: u64 = (1 << Self::HALF) - 1;

    fn apply(&self, x: u64) -> u64 {
        let (mut left, mut right) = ((x >> Self::HALF) & Self::MASK, x & Self::MASK);
        for key in self.0 {
            let f = mix64(right ^ key) & Self::MASK;
            (left, right) = (right, left ^ f);
        }
        (left << Self::HALF) | right
    }
}

struct Keys {
    user: IdPermutation,
    vehicle: IdPermutation,
    rental: IdPermutation,
    vehicle_type: u64,
}

impl Keys {
    fn new(seed: u64) -> Keys {
        let mut rng = Rng::new(seed, 0);
        let mut perm = || IdPermutation(std::array::from_fn(|_| rng.0.next_u64()));
        let (user, vehicle, rental) = (perm(), perm(), perm());
        Keys {
            user,
            vehicle,
            rental,
            vehicle_type: rng.0.next_u64(),
        }
    }

    /// Vehicle number `i`'s type, in about the reference's shares
    /// (42% basic, 36% premium, 22% high_end).
    fn vehicle_type(&self, i: u64) -> VehicleType {
        match mix64(i ^ self.vehicle_type) % 100 {
            0..42 => VehicleType::Basic,
            42..78 => VehicleType::Premium,
            _ => VehicleType::HighEnd,
        }
    }
}

#[derive(Clone, Copy)]
enum VehicleType {
    Basic,
    Premium,
    HighEnd,
}

impl VehicleType {
    fn name(self) -> &'static str {
        match self {
            VehicleType::Basic => "basic",
            VehicleType::Premium => "premium",
            VehicleType::HighEnd => "high_end",
        }
    }

    fn hourly_rate(self) -> u64 {
        match self {
            VehicleType::Basic => 10,
            VehicleType::Premium => 20,
            VehicleType::HighEnd => 50,
        }
    }

    fn brands(self) -> &'static [&'static str] {
        match self {
            VehicleType::Basic => &[
                "Chevrolet",
                "Ford",
                "Honda",
                "Hyundai",
                "Kia",
                "Nissan",
                "Toyota",
                "Volkswagen",
            ],
            VehicleType::Premium => &[
                "Acura",
                "Audi",
                "BMW",
                "Infiniti",
                "Lexus",
                "Mercedes-Benz",
                "Volvo",
            ],
            VehicleType::HighEnd => &[
                "Bentley",
                "Jaguar",
                "Land Rover",
                "Maserati",
                "Porsche",
                "Tesla",
            ],
        }
    }
}

// ---------------------------------------------------------- formatting

fn write_str(b: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        b.extend_from_slice(part.as_bytes());
    }
}

fn push_dec(b: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// `n` in exactly `width` digits, zero-padded (n < 10^width).
fn push_padded(b: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = b.len();
    b.resize(start + width, b'0');
    for slot in b[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `units / 10^decimals` with exactly `decimals` decimals.
fn push_fixed(b: &mut Vec<u8>, units: i64, decimals: u32) {
    if units < 0 {
        b.push(b'-');
    }
    let scale = 10u64.pow(decimals);
    let abs = units.unsigned_abs();
    push_dec(b, abs / scale);
    b.push(b'.');
    push_padded(b, abs % scale, decimals as usize);
}

fn push_hex10(b: &mut Vec<u8>, id: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..10).rev() {
        b.push(HEX[((id >> (shift * 4)) & 0xf) as usize]);
    }
}

fn push_letters(b: &mut Vec<u8>, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        b.push(b'A' + rng.below(26) as u8);
    }
}

/// A US phone number in one of the reference's six styles, sometimes with
/// an extension.
fn push_phone(b: &mut Vec<u8>, rng: &mut Rng) {
    let (area, exchange, line) = (rng.below(1000), rng.below(1000), rng.below(10_000));
    let (prefix, open, mid, sep) = match rng.below(6) {
        0 => ("", "", "-", "-"),
        1 => ("", "(", ")", "-"),
        2 => ("", "", ".", "."),
        3 => ("+1-", "", "-", "-"),
        4 => ("001-", "", "-", "-"),
        _ => ("", "", "", ""),
    };
    write_str(b, &[prefix, open]);
    push_padded(b, area, 3);
    b.extend_from_slice(mid.as_bytes());
    push_padded(b, exchange, 3);
    b.extend_from_slice(sep.as_bytes());
    push_padded(b, line, 4);
    if rng.below(3) == 0 {
        b.push(b'x');
        let width = rng.range(3, 5);
        push_padded(b, rng.below(10u64.pow(width as u32)), width as usize);
    }
}

const MINUTES_PER_DAY: i64 = 24 * 60;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days`].
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD`.
fn push_date(b: &mut Vec<u8>, days: i64) {
    let (year, month, day) = civil(days);
    push_padded(b, year as u64, 4);
    b.push(b'-');
    push_padded(b, month.into(), 2);
    b.push(b'-');
    push_padded(b, day.into(), 2);
}

/// `YYYY-MM-DD HH:MM:00` of minutes since 1970-01-01 00:00.
fn push_datetime(b: &mut Vec<u8>, minutes: i64) {
    push_date(b, minutes.div_euclid(MINUTES_PER_DAY));
    let minute_of_day = minutes.rem_euclid(MINUTES_PER_DAY) as u64;
    b.push(b' ');
    push_padded(b, minute_of_day / 60, 2);
    b.push(b':');
    push_padded(b, minute_of_day % 60, 2);
    b.extend_from_slice(b":00");
}

// ---------------------------------------------------------- word lists

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Nancy",
    "Matthew",
    "Lisa",
    "Anthony",
    "Betty",
    "Mark",
    "Margaret",
    "Steven",
    "Sandra",
    "Andrew",
    "Ashley",
    "Joshua",
    "Emily",
    "Kevin",
    "Donna",
    "Brian",
    "Michelle",
    "Ryan",
    "Carol",
    "Jose",
    "Amanda",
    "Ana",
    "Priya",
    "Ivan",
    "Wei",
    "Fatima",
    "Omar",
    "Sofia",
    "Luis",
    "Aisha",
    "Kenji",
    "Molly",
    "Courtney",
    "Keith",
    "Beth",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Khan",
    "Okafor",
    "Mensah",
    "Patel",
    "Kim",
    "Chen",
    "Parker",
    "Brooks",
    "Watson",
    "Owens",
    "Blair",
    "Mullen",
    "Brady",
    "Hoover",
];

const COMPANY_SUFFIXES: &[&str] = &["LLC", "Inc", "Group", "Ltd", "PLC", "and Sons"];

const STREET_SUFFIXES: &[&str] = &[
    "Street",
    "Avenue",
    "Road",
    "Lane",
    "Drive",
    "Court",
    "Way",
    "Place",
    "Parkway",
    "Square",
    "Ridge",
    "Springs",
    "View",
    "Isle",
    "Locks",
    "Extension",
    "Causeway",
    "Radial",
];

const CA_CITIES: &[&str] = &[
    "Los Angeles",
    "San Diego",
    "San Jose",
    "San Francisco",
    "Fresno",
    "Sacramento",
    "Long Beach",
    "Oakland",
    "Bakersfield",
    "Anaheim",
    "Santa Ana",
    "Riverside",
    "Stockton",
    "Irvine",
    "Chula Vista",
    "Fremont",
    "Santa Clarita",
    "San Bernardino",
    "Modesto",
    "Fontana",
    "Oxnard",
    "Moreno Valley",
    "Huntington Beach",
    "Glendale",
    "Santa Rosa",
    "Elk Grove",
    "Oceanside",
    "Ontario",
    "Rancho Cucamonga",
    "Roseville",
    "Lancaster",
    "Sunnyvale",
    "Thousand Oaks",
];

const EMAIL_DOMAINS: &[&str] = &["gmail.com", "yahoo.com", "hotmail.com"];

const NY_STREETS: &[&str] = &[
    "Main St",
    "Maple Ave",
    "Pine St",
    "Cedar Rd",
    "Elm St",
    "Lake Dr",
    "Broadway",
    "Oak Ave",
    "Park Pl",
    "Hill Rd",
];

const NY_PLACES: &[&str] = &[
    "NEW YORK",
    "BROOKLYN",
    "BRONX",
    "QUEENS",
    "STATEN ISLAND",
    "NEWARK",
    "JERSEY CITY",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days(1970, 1, 1), 0);
        assert_eq!(days(2024, 3, 1) - days(2024, 2, 28), 2);
        for d in days(1999, 1, 1)..days(2041, 1, 1) {
            let (y, m, dd) = civil(d);
            assert_eq!(days(y, m, dd), d);
        }
    }

    #[test]
    fn ids_are_a_permutation() {
        let perm = Keys::new(7).user;
        let mut seen: Vec<u64> = (0..100_000).map(|i| perm.apply(i)).collect();
        assert!(seen.iter().all(|&id| id < 1 << 40));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100_000);
    }
}
