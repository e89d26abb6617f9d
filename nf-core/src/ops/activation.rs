//! Element-wise ops: ReLU and the residual addition.

/// ReLU in place: `x = max(x, 0)` (NaN stays NaN).
pub fn relu_forward(x: &mut [f32]) {
    for v in x.iter_mut() {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// ReLU backward in place on `dy`, from the ReLU's *output* `y`: the gradient is kept where
/// `y > 0` and zeroed elsewhere (the subgradient at 0 is 0, as in PyTorch).
pub fn relu_backward(y: &[f32], dy: &mut [f32]) {
    for (g, &v) in dy.iter_mut().zip(y) {
        if v <= 0.0 {
            *g = 0.0;
        }
    }
}

/// `y += x` element-wise (the residual connection of a basic block). Its backward pass is the
/// identity for both operands.
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ops::gradcheck::{numeric_grad, project, random_vec, rel_error};
    use crate::rng::Rng;
    use std::println;
    use std::vec::Vec;

    #[test]
    fn relu_values() {
        let mut x = [-2.0f32, -0.0, 0.0, 0.5, 3.0];
        relu_forward(&mut x);
        assert_eq!(x, [0.0, 0.0, 0.0, 0.5, 3.0]);
        let mut g = [1.0f32; 5];
        relu_backward(&x, &mut g);
        assert_eq!(g, [0.0, 0.0, 0.0, 1.0, 1.0]);
    }

    /// Inputs at least 0.1 away from the kink at 0 and eps = 1e-2, so no difference crosses it
    /// and the loss is exactly linear around every point; tolerance 1e-2 (rounding only).
    #[test]
    fn gradcheck_relu() {
        let mut rng = Rng::new(21);
        let mut x: Vec<f32> = (0..200)
            .map(|_| {
                let v = 0.1 + rng.uniform();
                if rng.below(2) == 0 {
                    v
                } else {
                    -v
                }
            })
            .collect();
        let r = random_vec(&mut rng, x.len());
        let mut y = x.clone();
        relu_forward(&mut y);
        let mut g = r.clone();
        relu_backward(&y, &mut g);
        let fd = numeric_grad(&mut x, 1e-2, |x| {
            let mut y = x.to_vec();
            relu_forward(&mut y);
            project(&r, &y)
        });
        let e = rel_error(&g, &fd);
        println!("gradcheck relu: dx {e:e}");
        assert!(e < 1e-2, "relu rel err {e}");
    }

    /// `L = Σ r·(y + x)`: both gradients are `r`. Linear, so eps = 1e-2 has no truncation error.
    #[test]
    fn gradcheck_add() {
        let mut rng = Rng::new(22);
        let mut y0 = random_vec(&mut rng, 50);
        let mut x0 = random_vec(&mut rng, 50);
        let r = random_vec(&mut rng, 50);
        // Backward of y += x passes dL/dy through unchanged to both operands.
        let (dy, dx) = (r.clone(), r.clone());
        let x_fixed = x0.clone();
        let fd_y = numeric_grad(&mut y0, 1e-2, |y| {
            let mut s = y.to_vec();
            add_assign(&mut s, &x_fixed);
            project(&r, &s)
        });
        let y_fixed = y0.clone();
        let fd_x = numeric_grad(&mut x0, 1e-2, |x| {
            let mut s = y_fixed.clone();
            add_assign(&mut s, x);
            project(&r, &s)
        });
        let (ey, ex) = (rel_error(&dy, &fd_y), rel_error(&dx, &fd_x));
        println!("gradcheck add: dy {ey:e}, dx {ex:e}");
        assert!(ey < 1e-2 && ex < 1e-2, "add rel err {ey} {ex}");
    }
}
