//! `nestvisor`: run guests on the software x86-64 + VMX hardware model, nested to any depth.

fn main() {
    println!("nestvisor (in construction)");
}
