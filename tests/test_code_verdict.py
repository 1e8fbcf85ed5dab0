"""The code and repo domains' verdict reads the task's test files as data: any text gives the cases
or a DataError naming the file and line, never another exception, and nothing in them runs."""

from hypothesis import given, settings, strategies as st

from pivotrl.errors import DataError
from pivotrl.lab.code_verdict import assertion_cases


def test_the_generator_s_tests_become_cases_and_other_forms_are_refused_by_line():
    cases = assertion_cases({"test_calc.py": "from calc import *\n\ndef test_f():\n    assert f(1, 'a') == [2, 3]\n"
                                             "    assert f(0, None) == {'k': 1.5}\n",
                             "d/test_m.py": "import m\ndef test_g():\n    assert m.g((1, 2)) == (3, 4)\n"})
    assert [(c.test_file, c.line, c.module, c.function, c.args, c.expected) for c in cases] == [
        ("d/test_m.py", 3, "d/m.py", "g", ([1, 2],), [3, 4]),  # tuples travel as JSON lists
        ("test_calc.py", 4, "calc.py", "f", (1, "a"), [2, 3]),
        ("test_calc.py", 5, "calc.py", "f", (0, None), {"k": 1.5})]
    for text, line in (("from calc import *\ndef test_f():\n    assert f(x) == 1\n", 3),  # not a literal
                       ("from calc import *\nimport os\nos.system('id')\n", 3),  # code at module level
                       ("from calc import *\ndef test_f():\n    assert f(1) != 2\n", 3),
                       ("from ..calc import *\ndef test_f():\n    assert f(1) == 2\n", 1)):
        try:
            assertion_cases({"test_x.py": text})
        except DataError as exc:
            assert f"'test_x.py' line {line}" in str(exc), (text, exc)
        else:
            raise AssertionError(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.builds(lambda body: f"from calc import *\ndef test_f():\n    {body}\n", st.text(max_size=80)))
def test_any_test_file_text_gives_cases_or_a_data_error(text):
    try:
        cases = assertion_cases({"test_x.py": text})
    except DataError:
        return
    assert cases and all(c.test_file == "test_x.py" for c in cases)
