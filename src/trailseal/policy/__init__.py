"""Write-time policy: secret detectors and content commitments (DESIGN §5)."""
