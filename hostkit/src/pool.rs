//! One bounded worker pool: at most `jobs` threads take items off a shared queue; results come back in input order.

use std::sync::Mutex;

/// `f` of every item, on at most `jobs` threads (at least one, never more than there are items),
/// each taking the next item when it is done with its last: a slow item holds one thread, not
/// a whole batch. The results are in the order of `items`. A panic in `f` propagates when the
/// pool ends, as `std::thread::scope` does.
pub fn map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let queue = Mutex::new(items.iter().enumerate());
    let results = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                // A poisoned lock only means another worker panicked; that panic is what surfaces.
                let Some((i, item)) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn bounded_in_order_and_every_item_once() {
        let items: Vec<u64> = (0..40).collect();
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let out = map(&items, 3, |&i| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            // Later items finish first: the order of the results is the input's, not completion's.
            std::thread::sleep(Duration::from_millis(40 - i));
            now.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3, "never more than `jobs` at once");
        // And `jobs` of them do run at once: three items that each wait (5 s at most) for all three.
        let started = AtomicUsize::new(0);
        let met = map(&[0, 1, 2], 3, |_| {
            started.fetch_add(1, Ordering::SeqCst);
            let t = std::time::Instant::now();
            while started.load(Ordering::SeqCst) < 3 && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            started.load(Ordering::SeqCst) == 3
        });
        assert_eq!(met, vec![true; 3]);
        assert_eq!(map(&[1], 0, |&i: &i32| i), vec![1], "jobs 0 still runs one worker");
        assert!(map(&[] as &[i32], 8, |&i| i).is_empty());
    }
}
