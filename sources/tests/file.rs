//! The file source: every line once, in order within its split, read in stints.

use std::io::Write;

use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::file::{FileSource, FileSplits, STINT_LINES};
use clickflow_sources::SourceBatch;

/// Lines of equal length (each a JSON number with leading zeros: a dead letter, which
/// carries its split and offset as an event does, and costs little to make).
const LINE: usize = 9;

/// A file of `lines` lines cut into `splits` equal splits.
fn file_of(lines: usize, splits: usize) -> (tempfile::NamedTempFile, FileSplits) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut text = Vec::with_capacity(lines * LINE);
    for n in 0..lines {
        writeln!(text, "{n:08}").unwrap();
    }
    file.write_all(&text).unwrap();
    file.flush().unwrap();
    let plan = FileSplits::plan(file.path(), splits).unwrap();
    (file, plan)
}

/// Polls `source` to its end with `max_lines` a poll; returns each line's `(split, offset)`
/// in the order read, and each split's progress reports.
fn read_all(source: &mut FileSource, max_lines: usize) -> (Vec<(usize, i64)>, Vec<Vec<bool>>) {
    let mut read = Vec::new();
    let mut finished_reports = vec![Vec::new(); source.partitions().len()];
    let mut batch = SourceBatch::default();
    let mut polls = 0;
    while !source.is_finished() {
        source.poll(&mut batch, max_lines).unwrap();
        assert!(batch.events.is_empty(), "every test line is a dead letter");
        assert!(
            batch.dead_letters.len() <= max_lines,
            "a poll reads at most its share"
        );
        read.extend(
            batch
                .dead_letters
                .iter()
                .map(|d| (d.partition.partition as usize, d.offset)),
        );
        for progress in &batch.progress {
            finished_reports[progress.partition].push(progress.finished);
        }
        batch.clear();
        polls += 1;
        assert!(polls < 1_000_000, "the source never finished");
    }
    (read, finished_reports)
}

#[test]
fn every_line_is_read_once_in_order_a_stint_of_one_split_at_a_time() {
    let per_split = STINT_LINES + 1_000;
    let (_file, plan) = file_of(3 * per_split, 3);
    let mut source = FileSource::open(
        &plan,
        &[(0, None), (1, None), (2, None)],
        DecodeLimits::default(),
    )
    .unwrap();
    let (read, finished_reports) = read_all(&mut source, 4_096);

    // Each split's lines, once each and in file order.
    for split in 0..3 {
        let offsets: Vec<i64> = read
            .iter()
            .filter(|(s, _)| *s == split)
            .map(|(_, o)| *o)
            .collect();
        let start = (split * per_split * LINE) as i64;
        let expected: Vec<i64> = (0..per_split as i64)
            .map(|n| start + n * LINE as i64)
            .collect();
        assert_eq!(offsets, expected, "split {split}");
    }
    // Read in turns: a stint of each split, then the rest of each.
    let mut turns: Vec<(usize, usize)> = Vec::new();
    for &(split, _) in &read {
        match turns.last_mut() {
            Some((s, lines)) if *s == split => *lines += 1,
            _ => turns.push((split, 1)),
        }
    }
    assert_eq!(
        turns,
        vec![
            (0, STINT_LINES),
            (1, STINT_LINES),
            (2, STINT_LINES),
            (0, 1_000),
            (1, 1_000),
            (2, 1_000)
        ]
    );
    // Each split reported finished once, in its last report.
    for reports in finished_reports {
        assert_eq!(reports.iter().filter(|f| **f).count(), 1);
        assert_eq!(reports.last(), Some(&true));
    }
}

#[test]
fn a_split_held_at_its_limit_gives_its_turn_to_the_next() {
    let (_file, plan) = file_of(200, 2);
    let mut source =
        FileSource::open(&plan, &[(0, None), (1, None)], DecodeLimits::default()).unwrap();
    // Split 0 may give its first 10 lines only.
    source.set_limit(0, Some(10 * LINE as i64));
    let mut batch = SourceBatch::default();
    source.poll(&mut batch, 50).unwrap();
    let read: Vec<(usize, i64)> = batch
        .dead_letters
        .iter()
        .map(|d| (d.partition.partition as usize, d.offset))
        .collect();
    let expected: Vec<(usize, i64)> = (0..10)
        .map(|n| (0, n * LINE as i64))
        .chain((0..40).map(|n| (1, (100 + n) * LINE as i64)))
        .collect();
    assert_eq!(
        read, expected,
        "the poll's other 40 lines come from split 1"
    );

    // Released, split 0 is read on once split 1's turn ends (here: at its end).
    source.set_limit(0, None);
    let (rest, _) = read_all(&mut source, 50);
    let split_0: Vec<i64> = rest
        .iter()
        .filter(|(s, _)| *s == 0)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(
        split_0,
        (10..100).map(|n| n * LINE as i64).collect::<Vec<_>>()
    );
    assert_eq!(rest.iter().filter(|(s, _)| *s == 1).count(), 60);
}
