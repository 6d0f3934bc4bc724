//! DB (Differentiable Binarization) post-processing: from the detector's text-probability map to
//! text boxes, as PaddleOCR does it with OpenCV and Clipper, written here without them.
//!
//! The map is thresholded; each 8-connected region of text pixels is a candidate (PaddleOCR traces
//! contours; a region's outer contour bounds the same pixels). A candidate's minimum-area rectangle
//! (rotating calipers over the convex hull of its pixel corners) is kept if its short side is at least
//! 3 pixels and the mean probability inside it reaches the box threshold. It is then "unclipped":
//! grown by `area * ratio / perimeter` on every side (for a rectangle, the Clipper round offset's own
//! minimum-area rectangle), and scaled to the image.

/// Post-processing settings (PP-OCR's, as tinyocr runs them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DbParams {
    pub thresh: f32,
    pub box_thresh: f32,
    pub unclip_ratio: f32,
    pub max_candidates: usize,
}

impl Default for DbParams {
    fn default() -> Self {
        Self {
            thresh: 0.2,
            box_thresh: 0.4,
            unclip_ratio: 1.4,
            max_candidates: 3000,
        }
    }
}

/// A rotated rectangle: centre, the unit vector of its first side, and its two side lengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotatedRect {
    pub center: [f32; 2],
    pub axis: [f32; 2],
    pub size: [f32; 2],
}

impl RotatedRect {
    /// Its corners, ordered top-left, top-right, bottom-right, bottom-left (by x, then y, as
    /// PaddleOCR orders them).
    pub fn corners(&self) -> [[f32; 2]; 4] {
        let [cx, cy] = self.center;
        let (u, v) = (self.axis, [-self.axis[1], self.axis[0]]);
        let (hw, hh) = (self.size[0] / 2.0, self.size[1] / 2.0);
        let mut pts = [[0.0f32; 2]; 4];
        for (i, (a, b)) in [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
            .iter()
            .enumerate()
        {
            pts[i] = [
                cx + a * hw * u[0] + b * hh * v[0],
                cy + a * hw * u[1] + b * hh * v[1],
            ];
        }
        order_clockwise(pts)
    }

    fn short_side(&self) -> f32 {
        self.size[0].min(self.size[1])
    }

    fn contains(&self, p: [f32; 2]) -> bool {
        let d = [p[0] - self.center[0], p[1] - self.center[1]];
        let along = d[0] * self.axis[0] + d[1] * self.axis[1];
        let across = -d[0] * self.axis[1] + d[1] * self.axis[0];
        along.abs() <= self.size[0] / 2.0 + 1e-3 && across.abs() <= self.size[1] / 2.0 + 1e-3
    }
}

/// Top-left, top-right, bottom-right, bottom-left: the two leftmost points (by x) are the left
/// side, each side ordered by y.
pub fn order_clockwise(mut pts: [[f32; 2]; 4]) -> [[f32; 2]; 4] {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut left, mut right) = ([pts[0], pts[1]], [pts[2], pts[3]]);
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [left[0], right[0], right[1], left[1]]
}

/// A detected text box in image pixels, with the mean text probability inside it.
#[derive(Clone, Debug, PartialEq)]
pub struct TextBox {
    pub quad: [[f32; 2]; 4],
    pub score: f32,
}

/// The text boxes of a `width` x `height` probability map, in the coordinates of an image
/// `dest_width` x `dest_height`.
pub fn boxes(
    map: &[f32],
    width: usize,
    height: usize,
    dest_width: usize,
    dest_height: usize,
    params: &DbParams,
) -> Vec<TextBox> {
    let mut out = Vec::new();
    for region in regions(map, width, height, params.thresh)
        .into_iter()
        .take(params.max_candidates)
    {
        let Some(rect) = min_area_rect(&region) else {
            continue;
        };
        if rect.short_side() < 3.0 {
            continue;
        }
        let score = mean_inside(map, width, height, &rect);
        if score < params.box_thresh {
            continue;
        }
        let [w, h] = rect.size;
        let grow = w * h * params.unclip_ratio / (2.0 * (w + h));
        let grown = RotatedRect {
            size: [w + 2.0 * grow, h + 2.0 * grow],
            ..rect
        };
        if grown.short_side() < 5.0 {
            continue;
        }
        let (sx, sy) = (
            dest_width as f32 / width as f32,
            dest_height as f32 / height as f32,
        );
        let quad = grown.corners().map(|[x, y]| {
            [
                (x * sx).round().clamp(0.0, (dest_width - 1) as f32),
                (y * sy).round().clamp(0.0, (dest_height - 1) as f32),
            ]
        });
        let side = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        if side(quad[0], quad[1]) <= 3.0 || side(quad[0], quad[3]) <= 3.0 {
            continue;
        }
        out.push(TextBox { quad, score });
    }
    out
}

/// The 8-connected regions of pixels above `thresh`, each as its pixels' (x, y), in the order
/// their first pixel is met scanning rows.
fn regions(map: &[f32], width: usize, height: usize, thresh: f32) -> Vec<Vec<(usize, usize)>> {
    let mut seen = vec![false; width * height];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..width * height {
        if seen[start] || map[start] <= thresh {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut region = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            region.push((x, y));
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if !seen[j] && map[j] > thresh {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(region);
    }
    out
}

/// The minimum-area rectangle around a region's pixels (each pixel centre, as OpenCV's contours
/// are), by rotating calipers over their convex hull.
fn min_area_rect(region: &[(usize, usize)]) -> Option<RotatedRect> {
    let points: Vec<[f32; 2]> = region.iter().map(|&(x, y)| [x as f32, y as f32]).collect();
    let hull = convex_hull(points);
    match hull.len() {
        0 => return None,
        1 => {
            return Some(RotatedRect {
                center: hull[0],
                axis: [1.0, 0.0],
                size: [0.0, 0.0],
            })
        }
        _ => {}
    }
    let mut best: Option<(f32, RotatedRect)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let (mut min_u, mut max_u, mut min_v, mut max_v) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in &hull {
            let pu = p[0] * u[0] + p[1] * u[1];
            let pv = -p[0] * u[1] + p[1] * u[0];
            min_u = min_u.min(pu);
            max_u = max_u.max(pu);
            min_v = min_v.min(pv);
            max_v = max_v.max(pv);
        }
        let area = (max_u - min_u) * (max_v - min_v);
        if best.as_ref().is_none_or(|(a, _)| area < *a) {
            let (cu, cv) = ((min_u + max_u) / 2.0, (min_v + max_v) / 2.0);
            let center = [cu * u[0] - cv * u[1], cu * u[1] + cv * u[0]];
            best = Some((
                area,
                RotatedRect {
                    center,
                    axis: u,
                    size: [max_u - min_u, max_v - min_v],
                },
            ));
        }
    }
    best.map(|(_, r)| r)
}

/// Andrew's monotone chain: the hull's vertices counter-clockwise, without collinear points.
fn convex_hull(mut points: Vec<[f32; 2]>) -> Vec<[f32; 2]> {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let cross =
        |o: [f32; 2], a: [f32; 2], b: [f32; 2]| (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    let mut hull: Vec<[f32; 2]> = Vec::with_capacity(points.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f32; 2]>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// The mean of the map over the pixels whose centres lie inside `rect`.
fn mean_inside(map: &[f32], width: usize, height: usize, rect: &RotatedRect) -> f32 {
    let corners = rect.corners();
    let lo = |i: usize| {
        corners
            .iter()
            .map(|p| p[i])
            .fold(f32::MAX, f32::min)
            .floor()
            .max(0.0) as usize
    };
    let hi = |i: usize, max: usize| {
        (corners
            .iter()
            .map(|p| p[i])
            .fold(f32::MIN, f32::max)
            .ceil()
            .max(0.0) as usize)
            .min(max - 1)
    };
    let (x0, x1, y0, y1) = (lo(0), hi(0, width), lo(1), hi(1, height));
    let (mut sum, mut n) = (0.0f64, 0u32);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if rect.contains([x as f32, y as f32]) {
                sum += f64::from(map[y * width + x]);
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / f64::from(n)) as f32
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A map with the rectangle [x0, x1) x [y0, y1) at probability `p`.
    fn map_with(width: usize, height: usize, rects: &[(usize, usize, usize, usize, f32)]) -> Vec<f32> {
        let mut map = vec![0.0; width * height];
        for &(x0, y0, x1, y1, p) in rects {
            for y in y0..y1 {
                for x in x0..x1 {
                    map[y * width + x] = p;
                }
            }
        }
        map
    }

    #[test]
    fn an_upright_region_becomes_its_rectangle_grown_by_the_unclip_distance() {
        let map = map_with(100, 40, &[(10, 10, 60, 20, 0.9)]);
        let found = boxes(&map, 100, 40, 100, 40, &DbParams::default());
        assert_eq!(found.len(), 1);
        // Pixel centres 10..=59 x 10..=19: a 49 x 9 rectangle, grown by 49*9*1.4/116 = 5.32 a side.
        assert_eq!(
            found[0].quad,
            [[5.0, 5.0], [64.0, 5.0], [64.0, 24.0], [5.0, 24.0]]
        );
        assert!((found[0].score - 0.9).abs() < 1e-6);
    }

    #[test]
    fn faint_thin_and_separate_regions_are_told_apart() {
        let map = map_with(
            200,
            60,
            &[
                (10, 10, 60, 20, 0.9),   // text
                (100, 10, 150, 20, 0.3), // above thresh, below box_thresh
                (10, 40, 60, 42, 0.9),   // two pixels high: too thin
                (100, 40, 150, 50, 0.8), // text
            ],
        );
        let found = boxes(&map, 200, 60, 400, 120, &DbParams::default());
        assert_eq!(found.len(), 2);
        // Scaled to an image twice the map's size.
        assert_eq!(found[1].quad[0], [189.0, 69.0]);
    }

    #[test]
    fn a_rotated_region_gets_a_rotated_rectangle() {
        let mut region = Vec::new();
        for t in 0..40 {
            for s in 0..6 {
                region.push((10 + t + s, 50 - t + s));
            }
        }
        let rect = min_area_rect(&region).unwrap();
        let angle = rect.axis[1].atan2(rect.axis[0]).to_degrees().rem_euclid(90.0);
        assert!((angle - 45.0).abs() < 1.0, "{angle}");
        assert!(rect.size[0].max(rect.size[1]) > 50.0);
    }
}
