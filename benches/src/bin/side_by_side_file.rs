//! Writes the side-by-side benchmark's input (`ShopConfig::side_by_side`) to a file, for
//! measuring `clickflow run` on it by hand (the sink's scale-out in the README).
//!
//! `side_by_side_file OUT [EVENTS (2000000)] [SEED (7)]`

use std::path::PathBuf;

use clickflow_benches::write_shop_file;
use clickflow_sources::shop::{Shop, ShopConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out: PathBuf = args
        .next()
        .ok_or("usage: side_by_side_file OUT [EVENTS] [SEED]")?
        .into();
    let events: usize = args.next().map_or(Ok(2_000_000), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(7), |a| a.parse())?;
    write_shop_file(&out, Shop::new(ShopConfig::side_by_side(seed)), events)?;
    eprintln!(
        "{events} events of the side-by-side shop in {}",
        out.display()
    );
    Ok(())
}
