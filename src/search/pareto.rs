//! Pareto fronts of minimized objectives with a constraint: feasible points (violation 0)
//! dominate infeasible ones, infeasible ones are ordered by how much they violate.

/// A point to rank: objectives to minimize and a constraint violation (0 = feasible).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point<const N: usize> {
    /// The objectives, each minimized.
    pub objectives: [f64; N],
    /// How far the point breaks the constraint (0 when it keeps it).
    pub violation: f64,
}

/// Whether `a` dominates `b`: feasible over infeasible, less violation among infeasible, and
/// among feasible points no worse in every objective and better in one.
pub fn dominates<const N: usize>(a: &Point<N>, b: &Point<N>) -> bool {
    match (a.violation > 0.0, b.violation > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.violation < b.violation,
        (false, false) => {
            a.objectives.iter().zip(&b.objectives).all(|(x, y)| x <= y)
                && a.objectives.iter().zip(&b.objectives).any(|(x, y)| x < y)
        }
    }
}

/// The non-dominated rank of every point (0 = on the front), by repeated peeling.
pub fn ranks<const N: usize>(points: &[Point<N>]) -> Vec<usize> {
    let mut rank = vec![usize::MAX; points.len()];
    let mut current = 0;
    while rank.contains(&usize::MAX) {
        let open: Vec<usize> = (0..points.len()).filter(|&i| rank[i] == usize::MAX).collect();
        let front: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| !open.iter().any(|&j| j != i && dominates(&points[j], &points[i])))
            .collect();
        for i in front {
            rank[i] = current;
        }
        current += 1;
    }
    rank
}

/// The indices of the front (rank 0), sorted by the first objective then the second.
pub fn front<const N: usize>(points: &[Point<N>]) -> Vec<usize> {
    let r = ranks(points);
    let mut f: Vec<usize> = (0..points.len()).filter(|&i| r[i] == 0).collect();
    f.sort_by(|&a, &b| points[a].objectives.partial_cmp(&points[b].objectives).unwrap_or(std::cmp::Ordering::Equal));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: f64, b: f64, violation: f64) -> Point<2> {
        Point { objectives: [a, b], violation }
    }

    #[test]
    fn the_front_of_a_planted_set_is_exactly_its_non_dominated_feasible_points() {
        let points = vec![
            p(5.0, 0.10, 0.0), // front
            p(2.0, 0.30, 0.0), // front
            p(0.0, 0.90, 0.0), // front
            p(2.0, 0.40, 0.0), // dominated by 1
            p(6.0, 0.10, 0.0), // dominated by 0
            p(0.0, 0.01, 1.0), // best objectives but infeasible
            p(3.0, 0.30, 0.0), // dominated by 1 (equal KL, more refusals)
        ];
        assert_eq!(front(&points), vec![2, 1, 0]);
        let r = ranks(&points);
        assert_eq!(r[3], 1);
        assert_eq!(r[4], 1);
        assert_eq!(r[6], 1);
        assert!(r[5] > r[3], "infeasible points rank after every feasible one");
    }

    #[test]
    fn dominance_is_strict_and_prefers_feasible_then_smaller_violation() {
        assert!(!dominates(&p(1.0, 1.0, 0.0), &p(1.0, 1.0, 0.0)), "equal points do not dominate");
        assert!(dominates(&p(9.0, 9.0, 0.0), &p(0.0, 0.0, 0.5)));
        assert!(dominates(&p(9.0, 9.0, 0.2), &p(0.0, 0.0, 0.5)));
        assert!(!dominates(&p(0.0, 2.0, 0.0), &p(1.0, 1.0, 0.0)));
    }

    #[test]
    fn all_infeasible_points_still_get_ranks() {
        let points = vec![p(0.0, 0.0, 2.0), p(0.0, 0.0, 1.0), p(0.0, 0.0, 1.0)];
        assert_eq!(ranks(&points), vec![1, 0, 0]);
    }
}
