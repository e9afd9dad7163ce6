"""Coursework: a student kit for minigpt's backward passes, and its autograder.

    python -m minigpt.coursework release OUT_DIR [--with-solutions]
    python -m minigpt.coursework grade FILE.py [--json results.json] [--extra-cases CASES.json] [--timeout S]
        [--user NAME|UID[:GID]] [--memory MB] [--visibility V] [--stdout-visibility V] [--printed W] [--near-copy [R]]

release   writes student_layers.py (every layer of the contract, bodies raising
          NotImplementedError), the student version of notebook 03 and a README.
grade     runs FILE.py's functions in child processes on the kit's cases (and an
          instructor's hidden ones), compares them with minigpt's layers and finite
          differences, checks the whole GPT with them, and prints a table (or
          writes Gradescope's results.json).

Files: cases.py (the cases and reference answers), runner.py (the child process),
model_check.py (the whole GPT, run by the grader, the student's calls made in the
child), sandbox.py (the security boundary: the child's
user and limits, the wall clock, the one channel back), near_copy.py (functions close
to minigpt's own, for the instructor),
judge.py (verdicts and hints), grade.py (orchestration and the report),
source_check.py (imports of minigpt, read from the source), guard.py (minigpt out of
reach of student code in the child), release.py (the kit),
student_template.py and solution.py (the student's file, blank and solved).
See docs/coursework.md.
"""
