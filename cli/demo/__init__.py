"""`flotilla demo`: a whole Flotilla cluster on one machine, with no AWS account."""
