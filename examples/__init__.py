"""Small programs that use Chronik from outside, as its clients would (not part
of the installed package: they import nothing of Chronik's)."""
