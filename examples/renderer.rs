//! A Mandelbrot renderer writing straight into shared memory: each task renders one band
//! of rows into a `SharedArray<u8>` (no pixels cross a pipe), a shared atomic counter
//! tracks rows done, and a band whose task crashes its worker fails alone.
//!
//! `cargo run --release --example renderer -- [OUT.pgm] [process|thread] [--crash-band N]`
//!
//! What it shows: `SharedArray` as a shared output buffer, `fetch_add` as a lock-free
//! counter, crash isolation (`TaskError::WorkerDied` for the one band; the image is still
//! written, that band black).

use poolrun::shm::SharedArray;
use poolrun::{Executor, Mode, Pool, PoolConfig, TaskError};

const W: usize = 480;
const H: usize = 320;
const BAND: usize = 32;

/// One band: rows `band * BAND ..`, written into `img`; `rows_done[0]` counts rows.
fn render_band(
    (img, rows_done, band, crash): (SharedArray<u8>, SharedArray<u64>, usize, bool),
) -> usize {
    if crash {
        std::process::abort(); // in process mode only this worker dies
    }
    let mut row = vec![0u8; W];
    for y in band * BAND..((band + 1) * BAND).min(H) {
        for (x, px) in row.iter_mut().enumerate() {
            let (cr, ci) = (
                x as f64 / W as f64 * 3.0 - 2.2,
                y as f64 / H as f64 * 2.0 - 1.0,
            );
            let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0u32);
            while zr * zr + zi * zi < 4.0 && n < 255 {
                (zr, zi) = (zr * zr - zi * zi + cr, 2.0 * zr * zi + ci);
                n += 1;
            }
            *px = 255 - n as u8;
        }
        img.copy_from_slice(y * W, &row);
        rows_done.fetch_add(0, 1);
    }
    band
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "mandelbrot.pgm".into());
    let mode: Mode = args.get(1).map_or("process", String::as_str).parse()?;
    let crash_band = args
        .iter()
        .position(|a| a == "--crash-band")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<usize>())
        .transpose()?;
    if crash_band.is_some() && mode == Mode::Thread {
        return Err("--crash-band needs process mode: a crashing thread takes its process".into());
    }
    let pool = Pool::new(mode, PoolConfig::new())?;
    let img = SharedArray::<u8>::new(W * H)?;
    let rows_done = SharedArray::<u64>::new(1)?;
    let bands = H.div_ceil(BAND);
    let (i2, r2) = (img.clone(), rows_done.clone());
    let jobs = (0..bands).map(move |b| (i2.clone(), r2.clone(), b, crash_band == Some(b)));
    for (b, r) in pool.map(render_band, jobs).enumerate() {
        match r {
            Ok(_) => {}
            Err(e @ TaskError::WorkerDied { .. }) => {
                eprintln!("renderer: band {b} failed alone: {e}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut pgm = format!("P5\n{W} {H}\n255\n").into_bytes();
    pgm.extend(img.to_vec());
    std::fs::write(&out, pgm)?;
    eprintln!(
        "renderer: {} of {H} rows rendered into shared memory, written to {out}",
        rows_done.get(0)
    );
    Ok(())
}
