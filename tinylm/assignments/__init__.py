"""Course assignments: catalogue, student kits, checks, and a sandboxed grader.

The solutions live in tinylm's own modules between nbgrader-style markers
(``### BEGIN SOLUTION`` / ``### END SOLUTION``); this package never holds a
second copy.  Pieces:

* :mod:`.catalogue` - assignments -> tasks -> marked functions, points, exercises
* :mod:`.regions`   - find / stub marked regions, splice functions (text + ast)
* :mod:`.exercises` - what the grader asks the code to compute; comparison
* :mod:`.bughunt`   - the "find the bug" exercise (broken backward passes)
* :mod:`.kit`       - ``make_kit``: the student kit or the instructor copy
* :mod:`.checker`   - inside a kit: public checks and ``submit``
* :mod:`.sandbox`   - one exercise in a bubblewrap sandbox (the OS boundary)
* :mod:`.grader`    - ``grade``: a submission -> Gradescope results.json
* :mod:`.gradescope` - the Gradescope autograder zip

Command line: ``tinylm assignment list | make | check | submit | grade | gradescope``
(see docs/assignments.md).  Nothing is imported here, so the sandboxed
process can import :mod:`.exercises` without pulling in the grader.
"""
