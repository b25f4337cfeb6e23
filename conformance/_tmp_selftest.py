# TEMPORARY: proves the watchdog/resume logic. Delete after use.
import asyncio, ctypes, time, unittest

def gen(mod, kind, factory):
    class A_HangTests(unittest.TestCase):
        def test_1_ok(self): pass
        def test_2_hang_busy(self):
            loop = factory()
            async def spin():
                while True:  # stuck loop holding the GIL
                    pass
            loop.run_until_complete(spin())
        def test_3_ok(self): pass
        def test_4_hang_sleep(self): time.sleep(1000)
        def test_5_crash(self): ctypes.string_at(0)
        def test_6_fail(self): self.fail("boom")
        def test_7_ok(self): pass
    class B_FixtureHang(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            time.sleep(1000)
        def test_a(self): pass
        def test_b(self): pass
    class C_After(unittest.TestCase):
        def test_ok(self): pass
    class D_TeardownHang(unittest.TestCase):
        @classmethod
        def tearDownClass(cls):
            time.sleep(1000)
        def test_x(self): pass
        def test_y(self): pass
    class E_Last(unittest.TestCase):
        def test_z(self): pass
    out = []
    for c in (A_HangTests, B_FixtureHang, C_After, D_TeardownHang, E_Last):
        c.__qualname__ = c.__name__
        c.__module__ = mod.__name__
        out.append(c)
    return out
