"""Journeys: sequence channels instead of blasting them (issue #5, CONTRACT.md "Journey definition").

Beyond the contract's JSON, a definition may carry:
- `"reentry": {"policy": "never" | "after_exit" | "cooldown", "cooldown": "P7D"}` (default after_exit);
- on a send step: `"on_suppressed": "exit"`, `"priority": 0-100`, `"expires_after": "PT6H"`;
- on a wait_for_event step: `"on_timeout": "exit"`.
Lifecycle actions are the contract's plus `revise` (approved or paused → draft, so a change makes a new
version; running enrollments keep theirs). Every send goes through the governor in bulk, one call per
scheduler batch (journeys.scheduler).
"""
